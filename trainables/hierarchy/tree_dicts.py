"""Trees and forests as plain JSON-able objects, tagged with their format: the saved form of
``.json`` tree files, model packages and job configs (exact round trip)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trainables.errors import UserInputError
from trainables.hierarchy.tree import ClassTree, Forest

TREE_FORMAT = "raysearch.tree/1"
FOREST_FORMAT = "raysearch.forest/1"


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


def saved_format(obj: Mapping[str, Any]) -> str | None:
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
