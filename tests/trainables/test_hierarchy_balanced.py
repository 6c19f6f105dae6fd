"""Balanced levels: cuts of a deep tree that nest, reach their sizes, and split lopsided tops."""

from __future__ import annotations

import collections

import pytest

from trainables.errors import UserInputError
from trainables.hierarchy.balanced import balanced_tree
from trainables.hierarchy.shipped import load_shipped
from trainables.hierarchy.tree import ClassTree


def lopsided() -> ClassTree:
    """64 leaves: 60 under a deep chain `big` > `b1..b4` > 15 leaves each, 4 under `small`."""
    parents = {f"s{i}": "small" for i in range(4)}
    for group in range(4):
        parents[f"b{group}"] = "big"
        for i in range(15):
            parents[f"b{group}-{i}"] = f"b{group}"
    parents.update({"big": "top", "small": "top"})
    return ClassTree.from_parents("lop", parents)


def shares(tree: ClassTree, level: int) -> list[int]:
    return sorted(collections.Counter(tree.leaf_to_node(level).tolist()).values())


def test_a_lopsided_top_is_split_until_no_node_holds_most_leaves():
    tree = lopsided()
    assert shares(tree, tree.depth) == [4, 60]  # root-aligned: one node holds 94%
    balanced = balanced_tree(tree, 1, level_sizes=(3,))
    assert shares(balanced, 1) == [4, 15, 15, 15, 15]  # `big` split into its four groups
    assert balanced.leaves == tree.leaves
    assert balanced.labels["b0@1"] == "b0"


def test_levels_nest_and_fall_strictly():
    balanced = balanced_tree(lopsided(), 2)
    sizes = balanced.level_sizes
    assert all(a > b for a, b in zip(sizes, sizes[1:], strict=False))
    fine, coarse = balanced.leaf_to_node(1), balanced.leaf_to_node(2)
    for node in set(fine.tolist()):
        assert len(set(coarse[fine == node].tolist())) == 1


def test_the_shipped_balanced_trees_spread_their_tops():
    old, new = load_shipped("imagenet1k-wordnet"), load_shipped("imagenet1k-wordnet-balanced")
    assert max(shares(old, old.depth)) == 997
    assert max(shares(new, new.depth)) < 600 and new.level_sizes[-1] >= 3
    assert new.leaves == old.leaves and new.depth == old.depth == 5
    cifar = load_shipped("cifar100-wordnet-balanced")
    assert cifar.level_sizes[0] == 100 and cifar.depth == 4
    assert balanced_tree(load_shipped("cifar100-wordnet"), 2) == balanced_tree(
        load_shipped("cifar100-wordnet"), 2
    )  # deterministic


def test_impossible_depths_are_one_line():
    with pytest.raises(UserInputError, match="`depth` must be an integer from 1 to 62"):
        balanced_tree(lopsided(), 63)
