"""Class trees from embeddings: agglomerative clustering of class embeddings, cut into levels.

The rules (all deterministic for fixed inputs):

* **Clustering.** The class embeddings are L2-normalised and merged bottom-up by scipy's
  agglomerative ``linkage``: ``ward`` (Euclidean distance between the normalised vectors, which
  orders pairs as cosine distance does), ``average`` or ``complete`` (cosine distance).
* **Levels.** One dendrogram is cut at ``depth`` sizes, finest level first: level ``k`` holds
  the clusters left after ``C - sizes[k - 1]`` merges (``C`` classes), so it has exactly that many
  nodes, and every cluster of a level lies inside one cluster of the level above (the cuts of one
  dendrogram are nested). Without ``level_sizes``, sizes are geometric between ``C`` and 1:
  ``round(C ** ((depth + 1 - k) / (depth + 1)))`` for ``k = 1 .. depth``, made strictly
  decreasing and at least 2 (CIFAR-100 at depth 2: 22 and 5).
* **Names.** A node's id is ``L<level>-<n>-<member>``, its display name (the prompt's
  superclass) ``kind of <member>``, where ``<member>`` is the member class whose embedding is
  nearest the cluster's mean direction. Saved trees keep both; edit the ``labels`` of a saved
  file to rename a node.

:func:`lca_levels` and :func:`tree_disagreement` compare trees: how different the trees of a
forest are, and how well a built tree recovers a known one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from trainables.errors import must
from trainables.hierarchy.tree import ClassTree, Forest
from trainables.numbers import is_integer

#: The agglomerative linkages a tree may be built with.
LINKAGES = ("ward", "average", "complete")


def default_level_sizes(classes: int, depth: int) -> tuple[int, ...]:
    """Geometric level sizes between ``classes`` and 1, finest first, raised where needed so
    that they fall strictly and end at 2 or more (module docstring)."""
    sizes = [round(classes ** ((depth + 1 - level) / (depth + 1))) for level in range(1, depth + 1)]
    floor = 2
    for level in reversed(range(depth)):  # coarsest first: each level above the one below
        sizes[level] = max(sizes[level], floor)
        floor = sizes[level] + 1
    ceiling = classes - 1
    for level in range(depth):  # finest first: each level below the one above
        sizes[level] = min(sizes[level], ceiling)
        ceiling = sizes[level] - 1
    return tuple(sizes)


def level_sizes_for(classes: int, depth, level_sizes=None) -> tuple[int, ...]:
    """The level sizes a tree of ``depth`` over ``classes`` gets: ``level_sizes`` checked, or
    the default ones; one line for settings no tree can have."""
    if not is_integer(depth) or not 1 <= depth < classes - 1:
        raise must("depth", f"an integer from 1 to {classes - 2} for {classes} classes", depth)
    if level_sizes is None:
        sizes = default_level_sizes(classes, depth)
        if len(sizes) != depth or sizes[-1] < 2 or len(set(sizes)) != depth:
            raise must("depth", f"at most {classes - 2} levels for {classes} classes", depth)
        return sizes
    sizes = tuple(level_sizes)
    valid = (
        len(sizes) == depth
        and all(is_integer(size) and size >= 2 for size in sizes)
        and all(a > b for a, b in zip((classes, *sizes), sizes, strict=False))
    )
    if not valid:
        raise must(
            "level_sizes",
            f"{depth} strictly decreasing sizes from below {classes} down to at least 2, "
            "finest level first",
            list(sizes),
        )
    return sizes


def cluster_levels(
    embeddings: np.ndarray,
    depth: int,
    *,
    linkage: str = "ward",
    level_sizes: Sequence[int] | None = None,
) -> list[np.ndarray]:
    """The cluster of every class at each level 1..depth: ``depth`` integer arrays ``[C]``,
    clusters numbered by first appearance in class order (nested; module docstring)."""
    from scipy.cluster.hierarchy import linkage as agglomerate

    vectors = np.asarray(embeddings, dtype=np.float64)
    if vectors.ndim != 2 or len(vectors) < 3 or not np.all(np.isfinite(vectors)):
        raise must("embeddings", "a finite [classes, dim] array of at least 3 classes", "<other>")
    if linkage not in LINKAGES:
        raise must("linkage", f"one of {', '.join(LINKAGES)}", linkage)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise must("embeddings", "non-zero vectors", "<a zero vector>")
    vectors = vectors / norms
    classes = len(vectors)
    sizes = level_sizes_for(classes, depth, level_sizes)
    metric = "euclidean" if linkage == "ward" else "cosine"
    merges = agglomerate(vectors, method=linkage, metric=metric)
    # Replay the merges in order with a union-find; after C - s merges, s clusters remain.
    parent = list(range(2 * classes - 1))

    def find(node: int) -> int:
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    levels, done = [], 0
    for size in sorted(sizes, reverse=True):  # finest first: the most clusters
        while done < classes - size:
            left, right = int(merges[done, 0]), int(merges[done, 1])
            parent[find(left)] = parent[find(right)] = classes + done
            done += 1
        roots = [find(leaf) for leaf in range(classes)]
        numbering: dict[int, int] = {}
        levels.append(np.array([numbering.setdefault(r, len(numbering)) for r in roots]))
    return levels


def embedding_tree(
    name: str,
    leaves: Sequence[str],
    embeddings: np.ndarray,
    *,
    depth: int,
    linkage: str = "ward",
    level_sizes: Sequence[int] | None = None,
    labels: Mapping[str, str] | None = None,
) -> ClassTree:
    """A tree over ``leaves`` (label order) from their embeddings ``[len(leaves), dim]``;
    ``labels`` are the leaves' display names (default: the ids), used to name superclasses."""
    leaves = tuple(leaves)
    vectors = np.asarray(embeddings, dtype=np.float64)
    if vectors.ndim != 2 or len(vectors) != len(leaves):
        raise must("embeddings", f"one row per class ({len(leaves)})", list(vectors.shape))
    levels = cluster_levels(vectors, depth, linkage=linkage, level_sizes=level_sizes)
    names = {leaf: (labels or {}).get(leaf, leaf) for leaf in leaves}
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    parents: dict[str, str] = {}
    node_labels = dict(names)
    below = list(leaves)  # each leaf's node on the level below the one being named
    for level, clusters in enumerate(levels, start=1):
        ids = {}
        for cluster in range(int(clusters.max()) + 1):
            members = np.flatnonzero(clusters == cluster)
            centre = unit[members].mean(axis=0)
            nearest = leaves[members[int(np.argmax(unit[members] @ centre))]]
            ids[cluster] = f"L{level}-{cluster}-{nearest}"
            node_labels[ids[cluster]] = f"kind of {names[nearest]}"
        for leaf, cluster in enumerate(clusters):
            parents[below[leaf]] = ids[int(cluster)]
            below[leaf] = ids[int(cluster)]
    return ClassTree.from_parents(name, parents, leaves=leaves, labels=node_labels, depth=depth)


def lca_levels(tree: ClassTree) -> np.ndarray:
    """``[C, C]``: the lowest level at which two leaves share a node (0 on the diagonal;
    ``depth + 1`` when they share none below the root)."""
    classes = len(tree.leaves)
    shared = np.full((classes, classes), tree.depth + 1, dtype=np.int64)
    for level in range(tree.depth, 0, -1):
        node = tree.leaf_to_node(level).numpy()
        shared[node[:, None] == node[None, :]] = level
    np.fill_diagonal(shared, 0)
    return shared


def tree_disagreement(first: ClassTree, second: ClassTree) -> float:
    """The fraction of leaf pairs whose lowest shared level differs between two trees over the
    same leaves (0: the same grouping at every level; trees of other depths differ by depth)."""
    if first.leaves != second.leaves:
        raise must("trees", "trees over the same leaves in the same order", second.name)
    upper = np.triu_indices(len(first.leaves), k=1)
    return float(np.mean(lca_levels(first)[upper] != lca_levels(second)[upper]))


def forest_disagreement(forest: Forest) -> dict[tuple[str, str], float]:
    """:func:`tree_disagreement` of every pair of trees of a forest."""
    trees = forest.trees
    return {
        (a.name, b.name): tree_disagreement(a, b)
        for i, a in enumerate(trees)
        for b in trees[i + 1 :]
    }


def distance_agreement(tree: ClassTree, embeddings: np.ndarray) -> float:
    """Spearman's rank correlation, over leaf pairs, between the level at which two leaves meet
    in ``tree`` and the cosine distance of their embeddings ``[C, dim]``: near 1 when the
    embeddings keep the classes of a superclass together, near 0 when they ignore the tree."""
    from scipy.stats import spearmanr

    vectors = np.asarray(embeddings, dtype=np.float64)
    if vectors.shape[0] != len(tree.leaves):
        raise must("embeddings", f"one row per leaf ({len(tree.leaves)})", list(vectors.shape))
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    upper = np.triu_indices(len(tree.leaves), k=1)
    meet = lca_levels(tree)[upper]
    if np.all(meet == meet[0]):
        return float("nan")  # a flat tree orders no pair before another
    return float(spearmanr(meet, 1.0 - (unit @ unit.T)[upper]).statistic)
