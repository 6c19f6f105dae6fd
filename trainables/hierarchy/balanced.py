"""Balanced levels for a deep tree: each level a cut of the tree chosen for its size, not its
distance from the root.

Root-aligned levels follow the tree's top, which WordNet makes lopsided (997 of ImageNet's
classes under "physical entity", 3 under "abstraction"). Here the levels are cuts: sets of
nodes that cover every leaf once. Starting from the top nodes, the node with the most leaves
below it is replaced by its children (ties: the first in level order) until the cut has at least
the level's size; the coarsest level is cut first and each finer one continues from it, so the
levels nest. Sizes default to the geometric ones of
:func:`~trainables.hierarchy.embedding_trees.default_level_sizes`. A node kept on several levels
gets one id per level (``<id>@<level>``, its label unchanged); a leaf that cannot be split further
stands for itself, as a shallow leaf does in root-aligned trees.
"""

from __future__ import annotations

from collections.abc import Sequence

from trainables.hierarchy.embedding_trees import level_sizes_for
from trainables.hierarchy.tree import ClassTree

#: A node holding more than this many times a level's mean share of the leaves is split further
#: (while the level stays smaller than the one below).
BALANCE = 2.0


def _children(tree: ClassTree) -> dict[str, list[str]]:
    children: dict[str, list[str]] = {}
    for child, parent in tree.parents.items():
        children.setdefault(parent, []).append(child)
    return children


def _leaf_counts(tree: ClassTree, children: dict[str, list[str]]) -> dict[str, int]:
    counts: dict[str, int] = {}

    def count(node: str) -> int:
        if node not in counts:
            counts[node] = sum(count(c) for c in children[node]) if node in children else 1
        return counts[node]

    for node in (*tree.level_nodes(tree.depth), *tree.leaves):
        count(node)
    return counts


def balanced_tree(
    tree: ClassTree,
    depth: int,
    *,
    level_sizes: Sequence[int] | None = None,
    name: str | None = None,
) -> ClassTree:
    """``tree`` (use its full depth) re-levelled into ``depth`` balanced levels (module
    docstring); ``level_sizes`` are the least sizes, finest first."""
    sizes = level_sizes_for(len(tree.leaves), depth, level_sizes)
    children = _children(tree)
    counts = _leaf_counts(tree, children)
    cut = list(tree.level_nodes(tree.depth))
    cuts: list[list[str]] = []
    classes = len(tree.leaves)
    for level in reversed(range(depth)):  # coarsest first; each finer cut refines the one before
        size = sizes[level]
        below = sizes[level - 1] if level else classes  # this cut stays smaller than that
        while True:
            splittable = [node for node in cut if node in children]
            if not splittable:
                break
            largest = max(splittable, key=lambda node: (counts[node], -cut.index(node)))
            lopsided = counts[largest] > BALANCE * classes / size
            grown = len(cut) + len(children[largest]) - 1
            if not (len(cut) < size or (lopsided and grown < below)):
                break
            at = cut.index(largest)
            cut[at : at + 1] = children[largest]
        cuts.append(list(cut))
    cuts.reverse()  # finest first, as levels count

    ancestor_in: list[dict[str, str]] = []  # per level: leaf -> its node in that cut
    for level_cut in cuts:
        owner = {}
        for node in level_cut:
            stack = [node]
            while stack:
                current = stack.pop()
                if current in children:
                    stack.extend(children[current])
                else:
                    owner[current] = node
        ancestor_in.append(owner)

    def node_id(node: str, level: int) -> str:
        return f"{node}@{level}"

    parents: dict[str, str] = {}
    labels = {leaf: tree.labels[leaf] for leaf in tree.leaves}
    for leaf in tree.leaves:
        below = leaf
        for level, owner in enumerate(ancestor_in, start=1):
            node = node_id(owner[leaf], level)
            labels[node] = tree.labels[owner[leaf]]
            parents[below] = node
            below = node
    return ClassTree.from_parents(
        name or f"{tree.name}-balanced", parents, leaves=tree.leaves, labels=labels, depth=depth
    )
