"""The package as a user gets it: a wheel built from the checkout, installed with its dependencies into a
clean virtualenv; ``import persistence``, the ``hybrid-saver`` console script, and a backup and a
restore against the test database, all from that virtualenv and outside the checkout."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

import persistence

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


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean virtualenv (no site packages) with the wheel built from the checkout installed in it."""
    work = tmp_path_factory.mktemp("package")
    src = work / "src"
    src.mkdir()
    # build from a copy, so the checkout gets no build/ or *.egg-info
    shutil.copy(ROOT / "pyproject.toml", src)
    shutil.copy(ROOT / "README.md", src)
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
            str(wheels[0]),
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
    # only the runtime dependencies: no dashboard packages, no test tools
    missing = _run(
        [
            str(python),
            "-c",
            "import importlib.util as u; print([m for m in ('streamlit', 'pandas', 'pytest', 'agent') if u.find_spec(m)])",
        ],
        venv,
    )
    assert missing.strip() == "[]"
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
    restored = _run([cli, "restore", str(first)], venv, env)
    assert f"from generation {first}" in restored, restored
    assert _run([str(python), "-c", BACKUP_SCRIPT, db_url, "read"], venv, env).strip() == "first"
    exported = _run([cli, "export", "pkg"], venv, env)
    assert '"first"' in exported and '"second"' not in exported
