"""The shape of the code: ``trainables/`` (the science) imports neither ``raysearch/`` (the
product) nor MLflow, so it runs inside any worker without them; no import cycles; no module too
long to hold one job."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCIENCE = sorted((ROOT / "trainables").rglob("*.py"))


def _imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function; for ``from a import b``
    both ``a`` and ``a.b`` (``b`` may be a submodule)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@pytest.mark.parametrize("path", SCIENCE, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_science_imports_neither_the_product_nor_mlflow(path):
    forbidden = {
        name
        for name in _imported_modules(path)
        if name.split(".")[0] in {"raysearch", "mlflow", "search_spaces"}
    }
    assert not forbidden, f"{path.relative_to(ROOT)} imports {sorted(forbidden)}"


def test_search_spaces_holds_data_only():
    assert not list((ROOT / "search_spaces").glob("*.py"))
    assert sorted(p.name for p in (ROOT / "search_spaces").glob("*.yaml"))


def test_no_module_imports_itself_through_others():
    paths = SCIENCE + sorted((ROOT / "raysearch").rglob("*.py"))
    modules = {_module_name(path): path for path in paths}
    imports = {
        name: {other for other in _imported_modules(path) if other in modules and other != name}
        for name, path in modules.items()
    }
    cycles = []
    for start in modules:  # depth-first search for a path back to `start`
        stack, seen = [(start, (start,))], set()
        while stack:
            name, trail = stack.pop()
            for other in imports[name]:
                if other == start:
                    cycles.append(" -> ".join((*trail, start)))
                elif other not in seen:
                    seen.add(other)
                    stack.append((other, (*trail, other)))
    assert not cycles, "import cycles: " + "; ".join(sorted(set(cycles))[:5])


#: The longest a module of the code may grow: past it, a module holds more than one job.
MAX_MODULE_LINES = 460


def test_no_module_is_too_long_to_hold_one_job():
    paths = SCIENCE + sorted((ROOT / "raysearch").rglob("*.py"))
    lengths = {path: len(path.read_text(encoding="utf-8").splitlines()) for path in paths}
    long = {str(p.relative_to(ROOT)): n for p, n in lengths.items() if n > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them by job): {long}"
