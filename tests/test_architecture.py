"""The library's layers: no import circle (TYPE_CHECKING imports included), and lower layers never
import upper ones (memory and store know nothing of the fleet, operations, the CLI or the facade);
``mypy --strict`` reports nothing."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "persistence"
#: what each layer may not import (prefixes of module names)
FORBIDDEN = {
    "persistence.store": ("persistence.memory", "persistence.fleet", "persistence.ops", "persistence.cli"),
    "persistence.memory": ("persistence.fleet", "persistence.ops", "persistence.cli"),
    "persistence.fleet": ("persistence.ops", "persistence.cli"),
    "persistence.ops": ("persistence.cli",),
}
FACADES = ("persistence.saver", "persistence.checkpointer")


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        name = _module(path)
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("persistence"):
                found.add(node.module)
                found.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("persistence"))
        graph[name] = found
    modules = set(graph)
    return {name: {m for m in deps if m in modules and m != name} for name, deps in graph.items()}


def test_no_import_circle() -> None:
    graph = _imports()
    # a package's __init__ re-exporting its modules is not a circle of its own
    edges = {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(edges[node]):
            if state.get(dep) == 1:
                raise AssertionError("import circle: " + " -> ".join([*stack[stack.index(dep) :], dep]))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert len(edges) > 30, "the scan found too few modules to mean anything"


def test_lower_layers_never_import_upper_ones() -> None:
    wrong = []
    for module, deps in _imports().items():
        for layer, banned in FORBIDDEN.items():
            if module == layer or module.startswith(layer + "."):
                wrong += [(module, d) for d in deps if d.startswith(banned) or d in FACADES]
    assert not wrong, wrong


def test_the_library_never_imports_streamlit_or_pandas() -> None:
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not any(n.split(".")[0] in ("streamlit", "pandas", "plotly") for n in names), path


def test_mypy_strict_reports_nothing() -> None:
    """``mypy --strict persistence/`` (incremental: ``.mypy_cache`` makes a rerun take seconds) finds no
    error at all."""
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", "persistence/"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    errors = [line for line in checked.stdout.splitlines() if ": error:" in line]
    # 1 means it found errors, 2 that mypy itself failed (which must not pass for a clean run)
    assert checked.returncode == (1 if errors else 0), checked.stdout + checked.stderr
    assert not errors, "mypy --strict errors:\n" + "\n".join(errors)
