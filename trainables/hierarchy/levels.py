"""From a parent table to levels: the checks of a tree's table (one parent per child, no cycle,
leaves without children) and its root-aligned, trunk-stripped, padded levels (the rules are in
:mod:`trainables.hierarchy.tree`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from trainables.errors import UserInputError, must


def is_node_id(value: Any) -> bool:
    return isinstance(value, str) and value.strip() != ""


def check_name(name: Any) -> str:
    if not is_node_id(name):
        raise must("name", "a non-empty string", name)
    return name


def pairs_to_table(parents: Mapping[str, str] | Iterable[tuple[str, str]], name: str):
    """A ``{child: parent}`` dict from a mapping or from (child, parent) pairs.

    Pairs may repeat a child with the same parent; a child with two different parents is an error.
    """
    items = parents.items() if isinstance(parents, Mapping) else parents
    table: dict[str, str] = {}
    for item in items:
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise must(f"parents` of tree `{name}", "(child, parent) pairs", item)
        child, parent = item
        for node in (child, parent):
            if not is_node_id(node):
                raise must(f"nodes of tree `{name}", "non-empty strings", node)
        if child in table and table[child] != parent:
            raise UserInputError(
                f"child `{child}` is listed twice in tree `{name}` with different parents: "
                f"`{table[child]}` and `{parent}`."
            )
        table[child] = parent
    return table


def find_cycle(table: Mapping[str, str]) -> list[str] | None:
    """The first cycle of the parent table (as a closed list of nodes), or None."""
    state: dict[str, int] = {}  # 1: on the current walk, 2: known to reach a top node
    for start in table:
        walk: list[str] = []
        node: str | None = start
        while node is not None and state.get(node) is None:
            state[node] = 1
            walk.append(node)
            node = table.get(node)
        if node is not None and state[node] == 1:
            return walk[walk.index(node) :] + [node]
        for visited in walk:
            state[visited] = 2
    return None


@dataclass(frozen=True)
class TreeLevels:
    """Everything derived from a normalised tree: levels and each leaf's node at every level."""

    parents: dict[str, str]
    levels: tuple[tuple[str, ...], ...]
    leaf_nodes: tuple[tuple[str, ...], ...]  # [level][leaf] -> node id
    depth: int
    root: str | None  # the lowest trunk node, kept as the parent of every top node


def tree_levels(
    name: str, table: dict[str, str], leaves: tuple[str, ...], depth: int | None
) -> TreeLevels:
    """Validate a parent table against its leaves, strip the trunk, cut, and lay out levels."""
    cycle = find_cycle(table)
    if cycle is not None:
        raise UserInputError(f"tree `{name}` has a cycle: {' -> '.join(cycle)}.")
    children: dict[str, list[str]] = {}
    for child, parent in table.items():
        children.setdefault(parent, []).append(child)
    leaf_set = set(leaves)
    for leaf in leaves:
        if leaf in children:
            raise UserInputError(
                f"leaf `{leaf}` of tree `{name}` is the parent of `{children[leaf][0]}`; "
                "a leaf must not have children."
            )
        if leaf not in table:
            raise UserInputError(
                f"leaf `{leaf}` has no path to the root of tree `{name}`: "
                "it is never listed as a child."
            )
    for node in table:
        if node not in children and node not in leaf_set:
            raise UserInputError(
                f"node `{node}` of tree `{name}` has no children but is not one of its leaves "
                "(not a class of the dataset)."
            )

    # Ancestors of every leaf, nearest first, up to a top node.
    ancestors: list[list[str]] = []
    for leaf in leaves:
        chain, node = [], table.get(leaf)
        while node is not None:
            chain.append(node)
            node = table.get(node)
        ancestors.append(chain)

    # Strip the trunk: ancestors shared by every leaf, counted from the top.
    trunk = 0
    while all(len(chain) > trunk for chain in ancestors) and (
        len({chain[-1 - trunk] for chain in ancestors}) == 1
    ):
        trunk += 1
    root = ancestors[0][-trunk] if trunk else None
    paths = [chain[: len(chain) - trunk] for chain in ancestors]
    natural = max(len(path) for path in paths)
    if natural == 0 and depth != 0:
        raise UserInputError(
            f"tree `{name}` has no level above its leaves: every leaf hangs from the same root "
            "(a flat class list is ClassTree.flat)."
        )
    if depth is None:
        depth = natural
    elif natural == 0:
        pass  # a flat class list: its leaves are its only level
    elif isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= natural:
        raise must(
            "depth",
            f"an integer between 1 and {natural} (the natural depth of tree `{name}`)",
            depth,
        )

    # Keep the `depth` levels nearest the root; pad shallow leaves with themselves.
    leaf_nodes = [[leaf] for leaf in leaves]
    for nodes, leaf, path in zip(leaf_nodes, leaves, paths, strict=True):
        kept = path[max(len(path) - depth, 0) :]
        nodes.extend([leaf] * (depth - len(kept)) + kept)
    by_level = tuple(tuple(nodes[level] for nodes in leaf_nodes) for level in range(depth + 1))
    levels = tuple(tuple(dict.fromkeys(column)) for column in by_level)

    seen: set[str] = set()
    normalised: dict[str, str] = {}
    for level in range(depth):
        for node, parent in zip(by_level[level], by_level[level + 1], strict=True):
            if node != parent and node not in seen:
                seen.add(node)
                normalised[node] = parent
    if root is not None:
        for node in levels[depth]:
            normalised[node] = root
    return TreeLevels(normalised, levels, by_level, depth, root)
