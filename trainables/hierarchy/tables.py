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
from trainables.hierarchy.tree import ClassTree, Forest
from trainables.readers import (
    BadFile,
    RepeatedKey,
    is_file,
    load_json,
    parse_csv,
    read_text,
    read_yaml,
)

__all__ = [
    "FOREST_FORMAT",
    "TREE_FORMAT",
    "forest_from_dict",
    "forest_to_dict",
    "load",
    "read_parent_table",
    "save",
    "tree_from_dict",
    "tree_to_dict",
]

TREE_FORMAT = "raysearch.tree/1"
FOREST_FORMAT = "raysearch.forest/1"
TABLE_SUFFIXES = (".yaml", ".yml", ".json", ".csv", ".parquet")
SAVE_SUFFIXES = (".json", ".parquet")


class _FileError(BadFile):
    """A problem already phrased with the file's name."""


def _fail(path: Path, message: str) -> _FileError:
    return _FileError(f"{path}: {message}")


def _named(path: Path, error: UserInputError) -> _FileError:
    """``error`` as a problem of the file, named once (saved trees already name it)."""
    message = str(error)
    return _FileError(message) if message.startswith(f"{path}: ") else _fail(path, message)


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
                raise _fail(path, f"every item must be a (child, parent) pair, but got {item!r}.")
    else:
        raise _fail(path, f"the file must hold {shape}, but got a {type(obj).__name__}.")
    if not items:
        raise _fail(path, "the table is empty.")
    pairs = []
    for child, parent in items:
        child_id, parent_id = _node_id(child), _node_id(parent)
        if child_id is None or parent_id is None:
            raise _fail(
                path, f"child and parent must be non-empty names, but got {child!r}: {parent!r}."
            )
        pairs.append((child_id, parent_id))
    return pairs


def _read_text(path: Path) -> str:
    text = read_text(path)
    if not text.strip():
        raise _fail(path, "the file is empty.")
    return text


def _parse_yaml(path: Path) -> Any:
    try:
        obj = read_yaml(path)
    except RepeatedKey as repeated:  # YAML keys are unique, even with the same parent
        where = f" (line {repeated.line})"
        message = _RepeatedKey(repeated.key, repeated.first, repeated.second, where).message()
        raise _fail(path, message) from None
    if obj is None:
        raise _fail(path, "the file is empty.")
    return obj


def _parse_json(path: Path) -> Any:
    try:
        return load_json(_read_text(path), str(path), object_pairs_hook=_json_pairs)
    except _RepeatedKey as repeated:
        raise _fail(path, repeated.message()) from None


def _read_csv(path: Path) -> list[tuple[str, str]]:
    rows = [row for row in parse_csv(_read_text(path), str(path)) if any(c.strip() for c in row)]
    if not rows:
        raise _fail(path, "the file is empty.")
    header = [cell.strip() for cell in rows[0]]
    if header != ["child", "parent"]:
        raise _fail(path, f"the header must be child,parent, but got {','.join(header)[:80]!r}.")
    if len(rows) == 1:
        raise _fail(path, "the table is empty.")
    pairs = []
    for number, row in enumerate(rows[1:], start=2):
        cells = [cell.strip() for cell in row]
        if len(cells) != 2 or not all(cells):
            raise _fail(
                path,
                f"row {number} must be two non-empty fields child,parent, but got {row!r:.80}.",
            )
        pairs.append((cells[0], cells[1]))
    return pairs


def _read_parquet_table(path: Path):
    import pyarrow.parquet as pq

    if path.stat().st_size == 0:
        raise _fail(path, "the file is empty.")
    try:
        return pq.read_table(path)
    except Exception as error:  # pyarrow raises several types for a damaged file
        reason = " ".join(str(error).split())[:200]
        raise _fail(path, f"not a readable Parquet file ({reason}).") from None


def _column(table, name: str, path: Path, *, nullable: bool = False) -> list[Any]:
    import pyarrow as pa

    if name not in table.column_names:
        raise _fail(
            path, f"a column `{name}` is required, but the columns are {table.column_names}."
        )
    column = table.column(name)
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        raise _fail(path, f"column `{name}` must hold strings, but has type {column.type}.")
    values = column.to_pylist()
    if not nullable:
        for number, value in enumerate(values):
            if value is None or not value.strip():
                raise _fail(path, f"column `{name}` is empty in row {number}.")
    return values


def _parquet_pairs(table, path: Path) -> list[tuple[str, str]]:
    if table.num_rows == 0:
        raise _fail(path, "the table is empty.")
    children = _column(table, "child", path)
    parents = _column(table, "parent", path)
    return [
        (child.strip(), parent.strip()) for child, parent in zip(children, parents, strict=True)
    ]


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
        raise _fail(path, "this is a saved tree or forest, not a plain parent table.")
    return content


def _read_any(path: Path) -> list[tuple[str, str]] | ClassTree | Forest:
    """The (child, parent) pairs of a plain table, or the saved tree or forest."""
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        return _pairs_from_object(_parse_yaml(path), path)
    if suffix == ".json":
        obj = _parse_json(path)
        if isinstance(obj, Mapping) and _saved_format(obj) is not None:
            return _from_saved_object(obj, path)
        return _pairs_from_object(obj, path)
    if suffix == ".csv":
        return _read_csv(path)
    table = _read_parquet_table(path)
    saved = _load_parquet(table, path)
    return _parquet_pairs(table, path) if saved is None else saved


# -- saved trees and forests -----------------------------------------------------------------


def tree_to_dict(tree: ClassTree) -> dict[str, Any]:
    """The JSON form of a tree (with its ``format`` tag)."""
    return {
        "format": TREE_FORMAT,
        "name": tree.name,
        "leaves": list(tree.leaves),
        "parents": dict(tree.parents),
        "labels": dict(tree.labels),
        "depth": tree.depth,
    }


def forest_to_dict(forest: Forest) -> dict[str, Any]:
    """The JSON form of a forest (trees without their own ``format`` tag)."""
    trees = []
    for tree in forest.trees:
        entry = tree_to_dict(tree)
        del entry["format"]
        trees.append(entry)
    return {"format": FOREST_FORMAT, "trees": trees}


def _saved_format(obj: Mapping[str, Any]) -> str | None:
    value = obj.get("format")
    if isinstance(value, str) and value.startswith("raysearch."):
        return value
    return None


def _field(obj: Mapping[str, Any], key: str, kind: str, check, where: str) -> Any:
    if key not in obj:
        raise UserInputError(f"{where}: the field `{key}` is missing.")
    value = obj[key]
    if not check(value):
        raise UserInputError(f"{where}: `{key}` must be {kind}, but got {value!r:.80}.")
    return value


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _is_str_map(value: Any) -> bool:
    return isinstance(value, Mapping) and all(
        isinstance(key, str) and isinstance(item, str) for key, item in value.items()
    )


def tree_from_dict(obj: Mapping[str, Any], *, where: str = "tree") -> ClassTree:
    """A tree from its JSON form; ``where`` prefixes error messages (e.g. the file name)."""
    if not isinstance(obj, Mapping):
        raise UserInputError(f"{where}: a tree must be an object, but got {type(obj).__name__}.")
    name = _field(obj, "name", "a string", lambda v: isinstance(v, str), where)
    leaves = _field(obj, "leaves", "a list of strings", _is_str_list, where)
    parents = _field(obj, "parents", "an object of strings", _is_str_map, where)
    labels = obj.get("labels", {})
    if not _is_str_map(labels):
        raise UserInputError(
            f"{where}: `labels` must be an object of strings, but got {labels!r:.80}."
        )
    depth = obj.get("depth")
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int)):
        raise UserInputError(f"{where}: `depth` must be an integer, but got {depth!r}.")
    return ClassTree(name, tuple(leaves), parents, labels, depth)


def forest_from_dict(obj: Mapping[str, Any], *, where: str = "forest") -> Forest:
    """A forest from its JSON form."""
    if not isinstance(obj, Mapping):
        raise UserInputError(f"{where}: a forest must be an object, but got {type(obj).__name__}.")
    trees = _field(
        obj, "trees", "a non-empty list of trees", lambda v: isinstance(v, list) and v, where
    )
    return Forest(tree_from_dict(entry, where=where) for entry in trees)


def _from_saved_object(obj: Mapping[str, Any], path: Path) -> ClassTree | Forest:
    fmt = _saved_format(obj)
    if fmt == TREE_FORMAT:
        return tree_from_dict(obj, where=str(path))
    if fmt == FOREST_FORMAT:
        return forest_from_dict(obj, where=str(path))
    raise _fail(path, f"`format` must be {TREE_FORMAT} or {FOREST_FORMAT}, but got {fmt!r}.")


def _tree_rows(tree: ClassTree) -> list[dict[str, Any]]:
    leaf_position = {leaf: i for i, leaf in enumerate(tree.leaves)}
    nodes = list(tree.leaves)
    for level in range(1, tree.depth + 1):
        nodes.extend(node for node in tree.level_nodes(level) if node not in leaf_position)
    if tree.root is not None:
        nodes.append(tree.root)
    return [
        {
            "child": node,
            "parent": tree.parents.get(node),
            "label": tree.labels[node],
            "leaf_index": leaf_position.get(node),
        }
        for node in dict.fromkeys(nodes)
    ]


def _save_parquet(obj: ClassTree | Forest, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    fields = [
        pa.field("child", pa.string(), nullable=False),
        pa.field("parent", pa.string()),
        pa.field("label", pa.string(), nullable=False),
        pa.field("leaf_index", pa.int64()),
    ]
    if isinstance(obj, ClassTree):
        rows = _tree_rows(obj)
        metadata = {"format": TREE_FORMAT, "name": obj.name, "depth": str(obj.depth)}
    else:
        rows = [{"tree": tree.name, **row} for tree in obj.trees for row in _tree_rows(tree)]
        fields.insert(0, pa.field("tree", pa.string(), nullable=False))
        trees = [{"name": tree.name, "depth": tree.depth} for tree in obj.trees]
        metadata = {"format": FOREST_FORMAT, "trees": json.dumps(trees)}
    schema = pa.schema(fields, metadata=metadata)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def _tree_from_rows(name: str, depth: Any, rows: list[dict[str, Any]], path: Path) -> ClassTree:
    leaves: dict[int, str] = {}
    parents: dict[str, str] = {}
    labels: dict[str, str] = {}
    for row in rows:
        node = row["child"]
        if row["parent"] is not None:
            parents[node] = row["parent"]
        if row["label"] is not None:
            labels[node] = row["label"]
        if row["leaf_index"] is not None:
            leaves[row["leaf_index"]] = node
    if sorted(leaves) != list(range(len(leaves))):
        raise _fail(path, f"`leaf_index` of tree `{name}` must number the leaves 0..n-1.")
    try:
        depth = int(depth)
    except (TypeError, ValueError):
        raise _fail(path, f"the metadata `depth` must be an integer, but got {depth!r}.") from None
    ordered = tuple(leaves[i] for i in range(len(leaves)))
    return ClassTree(name, ordered, parents, labels, depth)


def _load_parquet(table, path: Path) -> ClassTree | Forest | None:
    """A saved tree or forest, or None when the file is a plain parent table."""
    try:
        metadata = {
            key.decode(): value.decode() for key, value in (table.schema.metadata or {}).items()
        }
    except UnicodeDecodeError:
        raise _fail(path, "the schema metadata is not UTF-8 text.") from None
    fmt = metadata.get("format")
    if fmt is None or not fmt.startswith("raysearch."):
        return None
    for column, nullable in (("child", False), ("parent", True), ("label", False)):
        _column(table, column, path, nullable=nullable)
    if "leaf_index" not in table.column_names:
        raise _fail(path, "a column `leaf_index` is required for a saved tree.")
    rows = table.to_pylist()
    if fmt == TREE_FORMAT:
        if "name" not in metadata:
            raise _fail(path, "the schema metadata `name` is missing.")
        return _tree_from_rows(metadata["name"], metadata.get("depth"), rows, path)
    if fmt == FOREST_FORMAT:
        _column(table, "tree", path)
        try:
            entries = json.loads(metadata.get("trees", ""))
            order = [(entry["name"], entry["depth"]) for entry in entries]
            if not all(isinstance(name, str) for name, _ in order):
                raise TypeError("a tree name is not a string")
        except (ValueError, TypeError, KeyError):
            raise _fail(path, "the schema metadata `trees` must list {name, depth}.") from None
        by_tree: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in order}
        for row in rows:
            if row["tree"] not in by_tree:
                raise _fail(path, f"tree `{row['tree']}` is not listed in the metadata `trees`.")
            by_tree[row["tree"]].append(row)
        return Forest(_tree_from_rows(name, depth, by_tree[name], path) for name, depth in order)
    raise _fail(path, f"`format` must be {TREE_FORMAT} or {FOREST_FORMAT}, but got {fmt!r}.")


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
        _save_parquet(obj, path)
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
