"""Trees from embeddings: valid and deterministic, exact level sizes, nested levels, a planted
hierarchy recovered, and the disagreement between trees."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainables.errors import UserInputError
from trainables.hierarchy.embedding_trees import (
    LINKAGES,
    cluster_levels,
    default_level_sizes,
    embedding_tree,
    forest_disagreement,
    lca_levels,
    tree_disagreement,
)
from trainables.hierarchy.tree import ClassTree, Forest


def planted(seed: int = 0, noise: float = 0.35, dim: int = 64):
    """48 classes: 4 groups of 3 subgroups of 4 classes; an embedding is the sum of its group's,
    its subgroup's and its own random direction, plus noise."""
    rng = np.random.default_rng(seed)
    groups, subgroups, leaves = rng.normal(size=(4, dim)), rng.normal(size=(12, dim)), []
    vectors = []
    for c in range(48):
        subgroup = c // 4
        group = subgroup // 3
        vectors.append(
            1.6 * groups[group] + 1.0 * subgroups[subgroup] + noise * rng.normal(size=dim)
        )
        leaves.append(f"class{c}")
    truth = ClassTree.from_parents(
        "truth",
        {
            **{f"class{c}": f"sub{c // 4}" for c in range(48)},
            **{f"sub{s}": f"group{s // 3}" for s in range(12)},
        },
        leaves=leaves,
    )
    return leaves, np.array(vectors), truth


@pytest.mark.parametrize("linkage", LINKAGES)
def test_a_planted_hierarchy_is_recovered(linkage):
    leaves, vectors, truth = planted()
    tree = embedding_tree("built", leaves, vectors, depth=2, linkage=linkage, level_sizes=(12, 4))
    assert tree.level_sizes == (48, 12, 4)
    # Same grouping of leaf pairs at every level in at least 95% of the pairs.
    assert tree_disagreement(tree, truth) <= 0.05


def test_levels_have_their_exact_sizes_and_nest():
    _, vectors, _ = planted(noise=1.5)
    levels = cluster_levels(vectors, 3, level_sizes=(20, 7, 3))
    assert [int(level.max()) + 1 for level in levels] == [20, 7, 3]
    for fine, coarse in zip(levels, levels[1:], strict=False):
        for cluster in range(int(fine.max()) + 1):  # a cluster lies inside one coarser cluster
            assert len(set(coarse[fine == cluster].tolist())) == 1


@settings(max_examples=25, deadline=None)
@given(
    classes=st.integers(5, 40),
    depth=st.integers(1, 3),
    seed=st.integers(0, 10_000),
    linkage=st.sampled_from(LINKAGES),
)
def test_every_built_tree_is_valid_and_deterministic(classes, depth, seed, linkage):
    depth = min(depth, classes - 2)
    vectors = np.random.default_rng(seed).normal(size=(classes, 8))
    leaves = [f"c{i}" for i in range(classes)]
    tree = embedding_tree("t", leaves, vectors, depth=depth, linkage=linkage)
    assert tree.leaves == tuple(leaves) and tree.depth == depth
    assert tree.level_sizes[1:] == default_level_sizes(classes, depth)
    again = embedding_tree("t", leaves, vectors, depth=depth, linkage=linkage)
    assert again == tree and dict(again.labels) == dict(tree.labels)
    for level in range(1, depth + 1):  # every node named after one of its members
        for label in tree.level_names(level):
            assert label.startswith("kind of c")


def test_superclasses_are_named_after_their_most_central_member():
    leaves = ["tulip", "rose", "daisy", "truck", "bus"]
    vectors = np.array([[1, 0.1, 0], [1, 0, 0], [1, -0.1, 0], [0, 0, 1], [0, 0.05, 1]])
    tree = embedding_tree("t", leaves, vectors, depth=1, level_sizes=(2,), labels={"rose": "Rose"})
    assert set(tree.level_names(1)) == {"kind of Rose", "kind of truck"} or set(
        tree.level_names(1)
    ) == {"kind of Rose", "kind of bus"}
    assert tree.labels["rose"] == "Rose"


def test_default_sizes_are_geometric_and_strictly_decreasing():
    assert default_level_sizes(100, 2) == (22, 5)
    assert default_level_sizes(1000, 5) == (316, 100, 32, 10, 3)
    assert default_level_sizes(5, 3) == (4, 3, 2)


def test_disagreement_is_zero_for_a_tree_and_itself_and_symmetric():
    leaves, vectors, truth = planted()
    built = embedding_tree("built", leaves, vectors, depth=2, linkage="average")
    other = embedding_tree("other", leaves, vectors[:, ::-1] ** 3, depth=2)
    assert tree_disagreement(truth, truth) == 0.0
    assert tree_disagreement(built, other) == tree_disagreement(other, built)
    pairs = forest_disagreement(Forest([truth, built, other]))
    assert set(pairs) == {("truth", "built"), ("truth", "other"), ("built", "other")}
    shared = lca_levels(truth)
    assert shared[0, 1] == 1 and shared[0, 4] == 2 and shared[0, 47] == 3 and shared[5, 5] == 0


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"depth": 0}, "`depth` must be an integer from 1 to 46"),
        ({"depth": 2, "level_sizes": (4, 12)}, "`level_sizes` must be 2 strictly decreasing"),
        ({"depth": 1, "level_sizes": (48,)}, "`level_sizes` must be"),
        ({"depth": 2, "linkage": "single"}, "`linkage` must be one of ward, average, complete"),
    ],
)
def test_bad_settings_are_one_line(kwargs, expected):
    leaves, vectors, _ = planted()
    with pytest.raises(UserInputError, match=expected):
        embedding_tree("t", leaves, vectors, **kwargs)


def test_embeddings_must_match_the_classes():
    with pytest.raises(UserInputError, match="one row per class"):
        embedding_tree("t", ["a", "b", "c", "d"], np.ones((3, 4)), depth=1)
    with pytest.raises(UserInputError, match="finite"):
        embedding_tree("t", ["a", "b", "c", "d"], np.full((4, 4), np.nan), depth=1)


def test_distance_agreement_is_high_for_the_planted_tree_and_near_zero_for_noise():
    from trainables.hierarchy.embedding_trees import distance_agreement

    leaves, vectors, truth = planted()
    assert distance_agreement(truth, vectors) > 0.6
    noise = np.random.default_rng(1).normal(size=vectors.shape)
    assert abs(distance_agreement(truth, noise)) < 0.1
    assert np.isnan(distance_agreement(ClassTree.flat("flat", leaves), vectors))
