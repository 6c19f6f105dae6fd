"""Trees in Parquet: plain ``child``/``parent`` tables read as pairs, and saved trees and forests
(one row per node; the format, names and depths in the schema metadata) written and read back.

pyarrow is imported on first use.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from trainables.hierarchy.tree import ClassTree, Forest
from trainables.hierarchy.tree_dicts import FOREST_FORMAT, TREE_FORMAT
from trainables.readers import bad_file


def read_parquet_table(path: Path):
    import pyarrow.parquet as pq

    if path.stat().st_size == 0:
        raise bad_file(path, "the file is empty.")
    try:
        return pq.read_table(path)
    except Exception as error:  # pyarrow raises several types for a damaged file
        reason = " ".join(str(error).split())[:200]
        raise bad_file(path, f"not a readable Parquet file ({reason}).") from None


def _column(table, name: str, path: Path, *, nullable: bool = False) -> list[Any]:
    import pyarrow as pa

    if name not in table.column_names:
        raise bad_file(
            path, f"a column `{name}` is required, but the columns are {table.column_names}."
        )
    column = table.column(name)
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        raise bad_file(path, f"column `{name}` must hold strings, but has type {column.type}.")
    values = column.to_pylist()
    if not nullable:
        for number, value in enumerate(values):
            if value is None or not value.strip():
                raise bad_file(path, f"column `{name}` is empty in row {number}.")
    return values


def parquet_pairs(table, path: Path) -> list[tuple[str, str]]:
    if table.num_rows == 0:
        raise bad_file(path, "the table is empty.")
    children = _column(table, "child", path)
    parents = _column(table, "parent", path)
    return [
        (child.strip(), parent.strip()) for child, parent in zip(children, parents, strict=True)
    ]


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


def save_parquet(obj: ClassTree | Forest, path: Path) -> None:
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
        raise bad_file(path, f"`leaf_index` of tree `{name}` must number the leaves 0..n-1.")
    try:
        depth = int(depth)
    except (TypeError, ValueError):
        raise bad_file(
            path, f"the metadata `depth` must be an integer, but got {depth!r}."
        ) from None
    ordered = tuple(leaves[i] for i in range(len(leaves)))
    return ClassTree(name, ordered, parents, labels, depth)


def load_parquet(table, path: Path) -> ClassTree | Forest | None:
    """A saved tree or forest, or None when the file is a plain parent table."""
    try:
        metadata = {
            key.decode(): value.decode() for key, value in (table.schema.metadata or {}).items()
        }
    except UnicodeDecodeError:
        raise bad_file(path, "the schema metadata is not UTF-8 text.") from None
    fmt = metadata.get("format")
    if fmt is None or not fmt.startswith("raysearch."):
        return None
    for column, nullable in (("child", False), ("parent", True), ("label", False)):
        _column(table, column, path, nullable=nullable)
    if "leaf_index" not in table.column_names:
        raise bad_file(path, "a column `leaf_index` is required for a saved tree.")
    rows = table.to_pylist()
    if fmt == TREE_FORMAT:
        if "name" not in metadata:
            raise bad_file(path, "the schema metadata `name` is missing.")
        return _tree_from_rows(metadata["name"], metadata.get("depth"), rows, path)
    if fmt == FOREST_FORMAT:
        _column(table, "tree", path)
        try:
            entries = json.loads(metadata.get("trees", ""))
            order = [(entry["name"], entry["depth"]) for entry in entries]
            if not all(isinstance(name, str) for name, _ in order):
                raise TypeError("a tree name is not a string")
        except (ValueError, TypeError, KeyError):
            raise bad_file(path, "the schema metadata `trees` must list {name, depth}.") from None
        by_tree: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in order}
        for row in rows:
            if row["tree"] not in by_tree:
                raise bad_file(path, f"tree `{row['tree']}` is not listed in the metadata `trees`.")
            by_tree[row["tree"]].append(row)
        return Forest(_tree_from_rows(name, depth, by_tree[name], path) for name, depth in order)
    raise bad_file(path, f"`format` must be {TREE_FORMAT} or {FOREST_FORMAT}, but got {fmt!r}.")
