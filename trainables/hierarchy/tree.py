"""Class trees and forests: levels, leaf-to-node maps and edges, built once and cached.

A :class:`ClassTree` organises the classes of a dataset (its leaves) into superclasses. Levels run
from 0 (the leaves) to ``L = tree.depth`` (the classes nearest the root). The rules:

* **Node ids are unique** within a tree; the display names in ``labels`` may collide (ImageNet has
  two "crane" classes).
* **The trunk is stripped.** Any chain of ancestors that contains every leaf, a single root
  included, is removed first: a level with one class tells nothing apart.
* **Levels are root-aligned.** After stripping, the top nodes form level ``L``, their children
  level ``L - 1``, and so on, so a node sits on exactly one level.
* **A shallow leaf is its own ancestor at the finer levels.** A leaf whose path is shorter than
  ``L`` is padded by repeating the leaf itself at the missing lower levels.
* **Cutting keeps the levels nearest the root.** ``tree.cut(d)`` keeps levels ``L - d + 1 .. L``
  (renumbered ``1 .. d``); deeper internal nodes are dropped and each leaf attaches to its
  ancestor on the deepest kept level.
* **Level order** is the order of first appearance when scanning the leaves in label order.

The stored ``parents`` table is the normalised one: cut-away nodes are gone and the trunk is
reduced to its lowest node (the root, kept only as the common parent of the top nodes, so that a
leaf hanging right below the root keeps a parent). It is not a level.

A :class:`Forest` is an ordered set of trees over exactly the same leaves (the multi-tree setting
of the method).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch

from trainables.errors import UserInputError, must
from trainables.hierarchy.levels import (
    TreeLevels,
    check_name,
    find_cycle,
    is_node_id,
    pairs_to_table,
    tree_levels,
)

__all__ = ["ClassTree", "Forest", "as_forest", "build_coarse_tree"]


@dataclass(frozen=True, eq=False)
class ClassTree:
    """A class hierarchy over the leaves of a dataset, with root-aligned levels 0..depth.

    Args:
        name: the tree's name (unique within a forest).
        leaves: leaf ids in dataset label order (label ``i`` is ``leaves[i]``).
        parents: ``{child: parent}`` for every non-top node. Nodes below the kept depth are
            removed on construction and the trunk is reduced to its root (see the module
            docstring); the stored table is this normalised one.
        labels: ``{id: display name}`` used in prompts; a missing entry defaults to the id.
        depth: the number of levels above the leaves; ``None`` keeps the natural depth.

    The module docstring states the level rules (trunk, root alignment, padding, cutting).
    Derived tensors are computed once and cached; treat them as read-only.
    """

    name: str
    leaves: tuple[str, ...]
    parents: Mapping[str, str]
    labels: Mapping[str, str] = field(default_factory=dict)
    depth: int | None = None
    _layout: TreeLevels = field(init=False, repr=False)

    def __post_init__(self) -> None:
        name = check_name(self.name)
        if isinstance(self.leaves, (str, bytes)) or not isinstance(self.leaves, Iterable):
            raise must(f"leaves` of tree `{name}", "a sequence of class ids", self.leaves)
        leaves = tuple(self.leaves)
        if not leaves:
            raise must(f"leaves` of tree `{name}", "non-empty", "<no leaves>")
        for leaf in leaves:
            if not is_node_id(leaf):
                raise must(f"leaves` of tree `{name}", "non-empty strings", leaf)
        if len(set(leaves)) != len(leaves):
            twice = next(leaf for leaf in leaves if leaves.count(leaf) > 1)
            raise UserInputError(f"leaf `{twice}` appears twice in tree `{name}`.")
        table = pairs_to_table(self.parents, name)
        layout = tree_levels(name, table, leaves, self.depth)
        given = self.labels or {}
        if not isinstance(given, Mapping):
            raise must(f"labels` of tree `{name}", "a mapping of node id to display name", given)
        labels: dict[str, str] = {}
        root = () if layout.root is None else ((layout.root,),)
        for level_nodes in (*layout.levels, *root):
            for node in level_nodes:
                label = given.get(node, node)
                if not is_node_id(label):
                    raise must(f"labels` of tree `{name}", "non-empty strings", label)
                labels[node] = label
        object.__setattr__(self, "leaves", leaves)
        object.__setattr__(self, "parents", MappingProxyType(layout.parents))
        object.__setattr__(self, "labels", MappingProxyType(labels))
        object.__setattr__(self, "depth", layout.depth)
        object.__setattr__(self, "_layout", layout)

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def from_parents(
        cls,
        name: str,
        parents: Mapping[str, str] | Iterable[tuple[str, str]],
        *,
        leaves: Sequence[str] | None = None,
        labels: Mapping[str, str] | None = None,
        depth: int | None = None,
    ) -> ClassTree:
        """Build a tree from a ``{child: parent}`` table or from (child, parent) pairs.

        ``leaves`` defaults to the nodes that are never parents, in table order. When given (the
        dataset's classes, in label order), every leaf must be a child in the table and every
        node without children must be one of them. A child may repeat only with the same parent.
        """
        name = check_name(name)
        table = pairs_to_table(parents, name)
        if not table:
            raise must(f"parents` of tree `{name}", "a non-empty table", "<an empty table>")
        if leaves is None:
            parent_set = set(table.values())
            leaves = tuple(child for child in table if child not in parent_set)
            if not leaves:
                cycle = find_cycle(table)
                if cycle is not None:
                    raise UserInputError(f"tree `{name}` has a cycle: {' -> '.join(cycle)}.")
        return cls(name, tuple(leaves), table, dict(labels or {}), depth)

    @classmethod
    def flat(cls, name: str, leaves: Sequence[str], *, labels=None) -> ClassTree:
        """A class list without superclasses (depth 0): a dataset that has no hierarchy."""
        name = check_name(name)
        if isinstance(leaves, (str, bytes)) or not leaves:
            raise must(f"leaves` of tree `{name}", "a non-empty sequence of class ids", leaves)
        root = f"{name} root"
        return cls(name, tuple(leaves), {leaf: root for leaf in leaves}, dict(labels or {}), 0)

    def cut(self, depth: int) -> ClassTree:
        """The same tree keeping only the ``depth`` levels nearest the root."""
        if depth == self.depth:
            return self
        return ClassTree(self.name, self.leaves, self.parents, self.labels, depth)

    def with_leaf_order(self, leaves: Sequence[str]) -> ClassTree:
        """The same tree with its leaves (labels) in the given order; the leaf sets must match."""
        leaves = tuple(leaves)
        if len(set(leaves)) != len(leaves):
            twice = next(leaf for leaf in leaves if leaves.count(leaf) > 1)
            raise UserInputError(f"class `{twice}` appears twice in the given classes.")
        _check_same_leaves(
            {self.name: self.leaves, "the given classes": leaves},
            intro=f"the leaves of tree `{self.name}` must be the given classes",
        )
        if leaves == self.leaves:
            return self
        return ClassTree(self.name, leaves, self.parents, self.labels, self.depth)

    def renamed(self, name: str) -> ClassTree:
        """The same tree under another name."""
        return ClassTree(name, self.leaves, self.parents, self.labels, self.depth)

    # -- levels -----------------------------------------------------------------------------

    def _check_level(self, level: int, *, top: int | None = None) -> int:
        top = self.depth if top is None else top
        if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= top:
            raise must("level", f"an integer between 0 and {top} for tree `{self.name}`", level)
        return level

    @property
    def root(self) -> str | None:
        """The common root above the top level (not a level), or None if the source had none."""
        return self._layout.root

    @property
    def level_sizes(self) -> tuple[int, ...]:
        """Number of nodes at levels 0..depth."""
        return tuple(len(nodes) for nodes in self._layout.levels)

    def level_nodes(self, level: int) -> tuple[str, ...]:
        """Node ids at ``level`` (0 = leaves in label order), ordered by first appearance."""
        return self._layout.levels[self._check_level(level)]

    def level_names(self, level: int) -> tuple[str, ...]:
        """Display names of :meth:`level_nodes` (used in prompts; may repeat)."""
        return tuple(self.labels[node] for node in self.level_nodes(level))

    @functools.cached_property
    def leaf_index(self) -> torch.Tensor:
        """LongTensor ``[depth + 1, n_leaves]``: row ``l`` indexes ``level_nodes(l)`` per leaf."""
        rows = []
        for nodes, column in zip(self._layout.levels, self._layout.leaf_nodes, strict=True):
            position = {node: i for i, node in enumerate(nodes)}
            rows.append([position[node] for node in column])
        return torch.tensor(rows, dtype=torch.long)

    def leaf_to_node(self, level: int) -> torch.Tensor:
        """LongTensor ``[n_leaves]``: the index into ``level_nodes(level)`` of each leaf's node."""
        return self.leaf_index[self._check_level(level)]

    @functools.cached_property
    def _edges(self) -> tuple[torch.Tensor, ...]:
        edges = []
        for level in range(self.depth):
            pairs = torch.stack([self.leaf_index[level], self.leaf_index[level + 1]], dim=1)
            first = dict.fromkeys(map(tuple, pairs.tolist()))
            edges.append(torch.tensor(list(first), dtype=torch.long).reshape(-1, 2))
        return tuple(edges)

    def edges(self, level: int) -> torch.Tensor:
        """LongTensor ``[E, 2]`` of (child index at ``level``, parent index at ``level + 1``).

        Every node of ``level`` appears exactly once as a child, in level order; a padded leaf's
        edge links the leaf to itself one level up.
        """
        return self._edges[self._check_level(level, top=self.depth - 1)]

    def path(self, leaf: str) -> tuple[str, ...]:
        """Node ids of ``leaf`` from level 0 (the leaf) to level ``depth``."""
        try:
            column = self.leaves.index(leaf)
        except ValueError:
            raise must("leaf", f"a leaf of tree `{self.name}`", leaf) from None
        return tuple(nodes[column] for nodes in self._layout.leaf_nodes)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ClassTree):
            return NotImplemented
        return (
            self.name == other.name
            and self.leaves == other.leaves
            and self.depth == other.depth
            and dict(self.parents) == dict(other.parents)
            and dict(self.labels) == dict(other.labels)
        )

    def __hash__(self) -> int:
        return hash((self.name, self.leaves, self.depth, frozenset(self.parents.items())))

    def __repr__(self) -> str:
        sizes = "/".join(map(str, self.level_sizes))
        return f"ClassTree(name={self.name!r}, depth={self.depth}, level_sizes={sizes})"

    def __getstate__(self) -> dict[str, Any]:
        # Derived tensors are rebuilt on demand rather than shipped to workers.
        return {key: self.__dict__[key] for key in ("name", "leaves", "depth")} | {
            "parents": dict(self.parents),
            "labels": dict(self.labels),
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        rebuilt = ClassTree(**state)
        for key in ("name", "leaves", "parents", "labels", "depth", "_layout"):
            object.__setattr__(self, key, getattr(rebuilt, key))


def _check_same_leaves(
    leaf_sets: Mapping[str, Sequence[str]], *, intro: str = "trees must share the same leaves"
) -> None:
    """Raise one line naming the leaves that are not shared by every named leaf list."""
    named = list(leaf_sets.items())
    if len({frozenset(leaves) for _, leaves in named}) <= 1:
        return
    everywhere = set.intersection(*(set(leaves) for _, leaves in named))
    notes = []
    for owner, leaves in named:
        only = [leaf for leaf in leaves if leaf not in everywhere]
        if only:
            shown = ", ".join(f"`{leaf}`" for leaf in only[:5])
            more = f" and {len(only) - 5} more" if len(only) > 5 else ""
            where = owner if owner.startswith("the ") else f"tree `{owner}`"
            verb = "is" if len(only) == 1 else "are"
            notes.append(f"{shown}{more} {verb} only in {where}")
    raise UserInputError(f"{intro}: " + "; ".join(notes) + ".")


class Forest:
    """Ordered class trees over exactly the same leaves.

    Trees whose leaves differ only in order are reordered to the first tree's leaf order; different
    leaf sets are an error naming the leaves concerned. Tree names must be unique.
    """

    __slots__ = ("_trees", "_by_name")

    def __init__(self, trees: Iterable[ClassTree]) -> None:
        trees = [trees] if isinstance(trees, ClassTree) else list(trees)
        if not trees:
            raise must("trees", "at least one class tree", "<no trees>")
        for tree in trees:
            if not isinstance(tree, ClassTree):
                raise must("trees", "ClassTree objects", type(tree).__name__)
        names = [tree.name for tree in trees]
        for name in names:
            if names.count(name) > 1:
                raise UserInputError(
                    f"tree names in a forest must be unique, but `{name}` repeats."
                )
        _check_same_leaves({tree.name: tree.leaves for tree in trees})
        first = trees[0].leaves
        self._trees = tuple(tree.with_leaf_order(first) for tree in trees)
        self._by_name = {tree.name: tree for tree in self._trees}

    @property
    def trees(self) -> tuple[ClassTree, ...]:
        return self._trees

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._by_name)

    @property
    def leaves(self) -> tuple[str, ...]:
        """The shared leaf ids, in label order."""
        return self._trees[0].leaves

    @property
    def depths(self) -> dict[str, int]:
        return {tree.name: tree.depth for tree in self._trees}

    def __getitem__(self, name: str) -> ClassTree:
        try:
            return self._by_name[name]
        except (KeyError, TypeError):
            raise must("tree", f"one of {', '.join(self._by_name)}", name) from None

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[ClassTree]:
        return iter(self._trees)

    def __len__(self) -> int:
        return len(self._trees)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Forest):
            return NotImplemented
        return self._trees == other._trees

    def __hash__(self) -> int:
        return hash(self._trees)

    def __repr__(self) -> str:
        inner = ", ".join(f"{tree.name}:{tree.depth}" for tree in self._trees)
        return f"Forest({inner})"

    def __getstate__(self) -> tuple[ClassTree, ...]:
        return self._trees

    def __setstate__(self, trees: tuple[ClassTree, ...]) -> None:
        self._trees = trees
        self._by_name = {tree.name: tree for tree in trees}

    def select(
        self,
        names: Sequence[str],
        depths: Mapping[str, int] | Sequence[int] | None = None,
    ) -> Forest:
        """The forest of the named trees (in the given order), each cut to its depth.

        ``depths`` maps tree names to depths, or lists depths aligned with ``names``; a tree
        without a depth keeps its own. This is the unit a search over tree combinations and
        hierarchy depths picks.
        """
        if isinstance(names, str):
            names = [names]
        names = list(names)
        if not names:
            raise must("names", "at least one tree name", "<no names>")
        if len(set(names)) != len(names):
            raise must("names", "distinct tree names", names)
        if depths is None:
            chosen: dict[str, int] = {}
        elif isinstance(depths, Mapping):
            unknown = [name for name in depths if name not in names]
            if unknown:
                raise must("depths", f"keyed by the selected trees {names}", unknown[0])
            chosen = dict(depths)
        else:
            depths = list(depths)
            if len(depths) != len(names):
                raise must("depths", f"{len(names)} depths, one per selected tree", depths)
            chosen = dict(zip(names, depths, strict=True))
        trees = []
        for name in names:
            tree = self[name]
            trees.append(tree.cut(chosen[name]) if name in chosen else tree)
        return Forest(trees)


def as_forest(obj: ClassTree | Forest) -> Forest:
    """A forest from a single tree or a forest (returned as is)."""
    if isinstance(obj, Forest):
        return obj
    if isinstance(obj, ClassTree):
        return Forest([obj])
    raise must("trees", "a ClassTree or a Forest", type(obj).__name__)


def build_coarse_tree(
    name: str,
    fine_to_coarse: Mapping[str, str],
    leaves: Sequence[str],
    *,
    labels: Mapping[str, str] | None = None,
) -> ClassTree:
    """A depth-1 tree from a ``{fine class: coarse class}`` mapping (e.g. CIFAR-100's 20
    superclasses). Labels default to the ids with underscores as spaces."""
    leaves = tuple(leaves)
    names = dict(labels or {})
    for node in (*leaves, *fine_to_coarse.values()):
        if isinstance(node, str):
            names.setdefault(node, node.replace("_", " "))
    return ClassTree.from_parents(name, fine_to_coarse, leaves=leaves, labels=names, depth=1)
