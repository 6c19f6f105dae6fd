"""Reading parent tables and saving or loading trees and forests.

Plain parent tables (one tree each, named after the file stem):

* ``.yaml`` / ``.yml``: a mapping ``child: parent`` (or a list of ``{child, parent}`` items);
* ``.json``: an object ``{"child": "parent"}`` or a list of ``[child, parent]`` pairs;
* ``.csv``: a header ``child,parent`` then one row per child;
* ``.parquet``: string columns ``child`` and ``parent``.

A child listed twice with different parents is an error (duplicate YAML and JSON keys included).

Saved trees and forests (exact round trip: ``load(save(x, path)) == x``):

* JSON tree: ``{"format": "raysearch.tree/1", "name", "leaves", "parents", "labels", "depth"}``;
  JSON forest: ``{"format": "raysearch.forest/1", "trees": [tree objects without "format"]}``.
* Parquet: one row per node with columns ``child`` (node id), ``parent`` (null for top nodes),
  ``label`` and ``leaf_index`` (label position, null for internal nodes); a forest adds a
  ``tree`` column. The schema metadata holds ``format`` and ``name``/``depth`` (a tree) or
  ``trees`` (a forest: a JSON list of ``{"name", "depth"}`` in forest order).

Text files are read through :mod:`trainables.readers`: UTF-8 with or without a byte order mark
(spreadsheets write one), at most 16 MiB, YAML and JSON nested at most 100 levels, YAML keys
plain scalars. Every problem with a file raises :class:`~trainables.errors.UserInputError` with
one line that names the file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from trainables.errors import UserInputError, must
from trainables.hierarchy.parquet_trees import (
    load_parquet,
    parquet_pairs,
    read_parquet_table,
    save_parquet,
)
from trainables.hierarchy.tree import ClassTree, Forest
from trainables.hierarchy.tree_dicts import (
    FOREST_FORMAT,
    TREE_FORMAT,
    forest_from_dict,
    forest_to_dict,
    saved_format,
    tree_from_dict,
    tree_to_dict,
)
from trainables.readers import (
    BadFile,
    RepeatedKey,
    bad_file,
    is_file,
    load_json,
    parse_csv,
    read_text,
    read_yaml,
)

__all__ = ["load", "read_parent_table", "save"]

TABLE_SUFFIXES = (".yaml", ".yml", ".json", ".csv", ".parquet")
SAVE_SUFFIXES = (".json", ".parquet")


def _named(path: Path, error: UserInputError) -> BadFile:
    """``error`` as a problem of the file, named once (saved trees already name it)."""
    message = str(error)
    return BadFile(message) if message.startswith(f"{path}: ") else bad_file(path, message)


# -- plain parent tables ---------------------------------------------------------------------


class _RepeatedKey(Exception):
    """A child given twice in a JSON or CSV table (the message says whether the parents differ)."""

    def __init__(self, key: Any, first: Any, second: Any, where: str = "") -> None:
        super().__init__(key)
        self.key, self.first, self.second, self.where = key, first, second, where

    def message(self) -> str:
        if self.first == self.second:
            return f"child `{self.key}` is listed twice{self.where}."
        return (
            f"child `{self.key}` is listed twice with different parents: "
            f"`{self.first}` and `{self.second}`{self.where}."
        )


def _json_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result and result[key] != value:
            raise _RepeatedKey(key, result[key], value)
        result[key] = value
    return result


def _node_id(value: Any) -> str | None:
    """A node id from a parsed scalar (YAML may give ints), or None if it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _pairs_from_object(obj: Any, path: Path) -> list[tuple[str, str]]:
    """(child, parent) pairs from a parsed YAML/JSON mapping or list."""
    shape = "a mapping of child to parent or a list of (child, parent) pairs"
    if isinstance(obj, Mapping):
        items = list(obj.items())
    elif isinstance(obj, list):
        items = []
        for item in obj:
            if isinstance(item, Mapping) and set(item) == {"child", "parent"}:
                items.append((item["child"], item["parent"]))
            elif isinstance(item, list) and len(item) == 2:
                items.append((item[0], item[1]))
            else:
                raise bad_file(
                    path, f"every item must be a (child, parent) pair, but got {item!r}."
                )
    else:
        raise bad_file(path, f"the file must hold {shape}, but got a {type(obj).__name__}.")
    if not items:
        raise bad_file(path, "the table is empty.")
    pairs = []
    for child, parent in items:
        child_id, parent_id = _node_id(child), _node_id(parent)
        if child_id is None or parent_id is None:
            raise bad_file(
                path, f"child and parent must be non-empty names, but got {child!r}: {parent!r}."
            )
        pairs.append((child_id, parent_id))
    return pairs


def _read_text(path: Path) -> str:
    text = read_text(path)
    if not text.strip():
        raise bad_file(path, "the file is empty.")
    return text


def _parse_yaml(path: Path) -> Any:
    try:
        obj = read_yaml(path)
    except RepeatedKey as repeated:  # YAML keys are unique, even with the same parent
        where = f" (line {repeated.line})"
        message = _RepeatedKey(repeated.key, repeated.first, repeated.second, where).message()
        raise bad_file(path, message) from None
    if obj is None:
        raise bad_file(path, "the file is empty.")
    return obj


def _parse_json(path: Path) -> Any:
    try:
        return load_json(_read_text(path), str(path), object_pairs_hook=_json_pairs)
    except _RepeatedKey as repeated:
        raise bad_file(path, repeated.message()) from None


def _read_csv(path: Path) -> list[tuple[str, str]]:
    rows = [row for row in parse_csv(_read_text(path), str(path)) if any(c.strip() for c in row)]
    if not rows:
        raise bad_file(path, "the file is empty.")
    header = [cell.strip() for cell in rows[0]]
    if header != ["child", "parent"]:
        raise bad_file(path, f"the header must be child,parent, but got {','.join(header)[:80]!r}.")
    if len(rows) == 1:
        raise bad_file(path, "the table is empty.")
    pairs = []
    for number, row in enumerate(rows[1:], start=2):
        cells = [cell.strip() for cell in row]
        if len(cells) != 2 or not all(cells):
            raise bad_file(
                path,
                f"row {number} must be two non-empty fields child,parent, but got {row!r:.80}.",
            )
        pairs.append((cells[0], cells[1]))
    return pairs


def _check_file(path: str | Path, suffixes: Sequence[str]) -> Path:
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise must("file", f"a {', '.join(suffixes)} file", str(path))
    if not is_file(path):
        raise must("file", "an existing file", str(path))
    return path


def read_parent_table(path: str | Path) -> list[tuple[str, str]]:
    """(child, parent) pairs of a plain parent table (YAML, JSON, CSV or Parquet)."""
    path = _check_file(path, TABLE_SUFFIXES)
    try:
        content = _read_any(path)
    except BadFile:
        raise
    except UserInputError as error:
        raise _named(path, error) from None
    if not isinstance(content, list):
        raise bad_file(path, "this is a saved tree or forest, not a plain parent table.")
    return content


def _read_any(path: Path) -> list[tuple[str, str]] | ClassTree | Forest:
    """The (child, parent) pairs of a plain table, or the saved tree or forest."""
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        return _pairs_from_object(_parse_yaml(path), path)
    if suffix == ".json":
        obj = _parse_json(path)
        if isinstance(obj, Mapping) and saved_format(obj) is not None:
            return _from_saved_object(obj, path)
        return _pairs_from_object(obj, path)
    if suffix == ".csv":
        return _read_csv(path)
    table = read_parquet_table(path)
    saved = load_parquet(table, path)
    return parquet_pairs(table, path) if saved is None else saved


def _from_saved_object(obj: Mapping[str, Any], path: Path) -> ClassTree | Forest:
    fmt = saved_format(obj)
    if fmt == TREE_FORMAT:
        return tree_from_dict(obj, where=str(path))
    if fmt == FOREST_FORMAT:
        return forest_from_dict(obj, where=str(path))
    raise bad_file(path, f"`format` must be {TREE_FORMAT} or {FOREST_FORMAT}, but got {fmt!r}.")


def save(obj: ClassTree | Forest, path: str | Path) -> Path:
    """Write a tree or forest as ``.json`` or ``.parquet`` (by suffix); returns the path."""
    path = Path(path)
    if path.suffix.lower() not in SAVE_SUFFIXES:
        raise must("output", "a .json or .parquet file", str(path))
    if not isinstance(obj, (ClassTree, Forest)):
        raise must("obj", "a ClassTree or a Forest", type(obj).__name__)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".json":
        data = tree_to_dict(obj) if isinstance(obj, ClassTree) else forest_to_dict(obj)
        path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    else:
        save_parquet(obj, path)
    return path


def _with_leaves(obj: ClassTree | Forest, leaves: Sequence[str]) -> ClassTree | Forest:
    if isinstance(obj, ClassTree):
        return obj.with_leaf_order(leaves)
    return Forest(tree.with_leaf_order(leaves) for tree in obj.trees)


def load(
    path: str | Path,
    *,
    leaves: Sequence[str] | None = None,
    depth: int | None = None,
    name: str | None = None,
) -> ClassTree | Forest:
    """Load a saved tree or forest, or build a tree from a plain parent table.

    A plain table makes a tree named ``name`` (default: the file stem) cut to ``depth``. When
    ``leaves`` (a dataset's classes in label order) is given, the tree's leaves must be exactly
    those classes, and the result follows their order.
    """
    path = _check_file(path, TABLE_SUFFIXES)
    try:
        content = _read_any(path)
        if isinstance(content, list):
            return ClassTree.from_parents(name or path.stem, content, leaves=leaves, depth=depth)
        if depth is not None:
            if not isinstance(content, ClassTree):
                raise must("depth", "unset for a forest (use select)", depth)
            content = content.cut(depth)
        if name is not None and isinstance(content, ClassTree):
            content = content.renamed(name)
        return content if leaves is None else _with_leaves(content, leaves)
    except BadFile:
        raise
    except UserInputError as error:
        raise _named(path, error) from None
