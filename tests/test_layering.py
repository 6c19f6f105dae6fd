"""The dependency rule between the packages: ``trainables/`` (the science) imports neither
``raysearch/`` (the product) nor MLflow, so it runs inside any worker without them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCIENCE = sorted((ROOT / "trainables").rglob("*.py"))


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


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
