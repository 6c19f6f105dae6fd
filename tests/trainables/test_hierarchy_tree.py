"""ClassTree and Forest: level properties on the embedded forest and on seeded random trees,
checked against a small independent reference of the level rules."""

from __future__ import annotations

import pickle
import random

import pytest
import torch

from trainables.data.embedded_taxonomy import LEAVES, TREES
from trainables.errors import UserInputError
from trainables.hierarchy import ClassTree, Forest, as_forest, build_coarse_tree

# -- an independent reference of the level rules ----------------------------------------------


def reference_paths(table: dict[str, str], leaves, depth=None) -> dict[str, tuple[str, ...]]:
    """Each leaf's node ids at levels 0..depth: trunk stripped, root-aligned, padded, cut."""
    chains = {}
    for leaf in leaves:
        chain, node = [], leaf
        while node in table:
            node = table[node]
            chain.append(node)
        chains[leaf] = chain[::-1]  # top first
    trunk = 0
    while all(len(c) > trunk for c in chains.values()) and (
        len({c[trunk] for c in chains.values()}) == 1
    ):
        trunk += 1
    tops_first = {leaf: chain[trunk:] for leaf, chain in chains.items()}
    natural = max(len(chain) for chain in tops_first.values())
    depth = natural if depth is None else depth
    paths = {}
    for leaf, chain in tops_first.items():
        kept = chain[:depth]
        top_down = kept + [leaf] * (depth - len(kept))  # levels depth..1
        paths[leaf] = (leaf, *reversed(top_down))
    return paths


def random_table(rng: random.Random, n_leaves: int) -> tuple[dict[str, str], list[str]]:
    """A random unbalanced hierarchy: groups of 2-4 free nodes get a new parent, repeatedly."""
    leaves = [f"c{i}" for i in range(n_leaves)]
    free, table, count = list(leaves), {}, 0
    stop_at = rng.choice([1, 2, 3])  # sometimes several top nodes, sometimes one root
    while len(free) > stop_at or any(node in leaves for node in free):
        rng.shuffle(free)
        size = rng.randint(2, min(4, len(free)))
        group, free = free[:size], free[size:]
        parent = f"n{count}"
        count += 1
        for child in group:
            table[child] = parent
        free.append(parent)
    order = list(leaves)
    rng.shuffle(order)
    return table, order


def check_level_properties(tree: ClassTree) -> None:
    n = len(tree.leaves)
    index = tree.leaf_index
    assert index.shape == (tree.depth + 1, n) and index.dtype == torch.long
    assert torch.equal(index[0], torch.arange(n))
    assert tree.level_nodes(0) == tree.leaves
    assert len(tree.level_nodes(tree.depth)) >= 2  # the trunk is gone
    for level in range(tree.depth + 1):
        nodes = tree.level_nodes(level)
        row = tree.leaf_to_node(level)
        assert torch.equal(row, index[level])
        # A partition of the leaves: every node has at least one leaf.
        assert torch.all(torch.bincount(row, minlength=len(nodes)) > 0)
        assert len(set(nodes)) == len(nodes)
        # Ordered by first appearance in label order.
        firsts = list(dict.fromkeys(row.tolist()))
        assert firsts == list(range(len(nodes)))
        assert len(tree.level_names(level)) == len(nodes)
        for i, leaf in enumerate(tree.leaves):
            assert tree.path(leaf)[level] == nodes[row[i]]
    for level in range(tree.depth):
        child, parent = index[level].tolist(), index[level + 1].tolist()
        # Coarser: the node one level up is a function of the node at this level.
        mapping: dict[int, set[int]] = {}
        for c, p in zip(child, parent, strict=True):
            mapping.setdefault(c, set()).add(p)
        assert all(len(ps) == 1 for ps in mapping.values())
        edges = tree.edges(level)
        assert edges.shape == (len(tree.level_nodes(level)), 2)
        assert edges[:, 0].tolist() == list(range(len(tree.level_nodes(level))))
        assert {tuple(e) for e in edges.tolist()} == set(zip(child, parent, strict=True))
        for leaf in tree.leaves:
            path = tree.path(leaf)
            pair = [tree.level_nodes(level).index(path[level])]
            pair.append(tree.level_nodes(level + 1).index(path[level + 1]))
            assert pair in edges.tolist()


# -- the embedded forest ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedded() -> Forest:
    return Forest(
        ClassTree.from_parents(name, table, leaves=LEAVES) for name, table in TREES.items()
    )


def test_embedded_forest_levels(embedded):
    assert embedded.names == ("form", "symmetry", "corners")
    assert embedded.leaves == LEAVES
    assert {t.name: t.level_sizes for t in embedded} == {
        "form": (20, 8, 3, 2),
        "symmetry": (20, 4, 2),
        "corners": (20, 4, 2),
    }
    for tree in embedded:
        check_level_properties(tree)
        assert {leaf: tree.path(leaf) for leaf in LEAVES} == reference_paths(
            TREES[tree.name], LEAVES
        )
    form = embedded["form"]
    assert form.path("star") == ("star", "emblem", "sign", "glyph")
    assert form.level_names(3) == ("plain figure", "glyph")


@pytest.mark.parametrize("seed", range(12))
def test_random_trees_match_reference(seed):
    rng = random.Random(seed)
    table, leaves = random_table(rng, rng.randint(3, 30))
    tree = ClassTree.from_parents(f"random{seed}", table, leaves=leaves)
    check_level_properties(tree)
    assert {leaf: tree.path(leaf) for leaf in leaves} == reference_paths(table, leaves)
    for depth in range(1, tree.depth + 1):
        cut = tree.cut(depth)
        check_level_properties(cut)
        assert cut.depth == depth
        assert {leaf: cut.path(leaf) for leaf in leaves} == reference_paths(table, leaves, depth)
        offset = tree.depth - depth
        for leaf in leaves:
            assert cut.path(leaf) == (leaf, *tree.path(leaf)[offset + 1 :])
        for level in range(1, depth + 1):
            assert cut.level_nodes(level) == tree.level_nodes(offset + level)
        # Normalised storage: rebuilding from the stored table gives the same tree.
        assert ClassTree(cut.name, cut.leaves, cut.parents, cut.labels, cut.depth) == cut
        assert ClassTree.from_parents(cut.name, cut.parents, leaves=leaves) == cut
        assert cut.cut(1) == tree.cut(1)


@pytest.mark.parametrize("seed", range(4))
def test_leaf_order_follows_the_given_classes(seed):
    rng = random.Random(100 + seed)
    table, leaves = random_table(rng, 12)
    tree = ClassTree.from_parents("t", table, leaves=leaves)
    shuffled = list(leaves)
    rng.shuffle(shuffled)
    other = tree.with_leaf_order(shuffled)
    assert other.leaves == tuple(shuffled)
    check_level_properties(other)
    assert all(other.path(leaf) == tree.path(leaf) for leaf in leaves)
    assert other.with_leaf_order(leaves) == tree


# -- padding, trunk and cutting on a hand-made unbalanced tree -------------------------------

UNBALANCED = {"a": "Y", "b": "Y", "Y": "X", "c": "X", "X": "R", "d": "R", "R": "Top"}


def test_shallow_leaves_are_their_own_ancestors():
    tree = ClassTree.from_parents("u", UNBALANCED, labels={"X": "big x"})
    assert tree.leaves == ("a", "b", "c", "d")
    assert tree.depth == 2
    assert tree.root == "R"  # "Top" -> "R" is the trunk; its lowest node stays as the root
    assert tree.level_nodes(2) == ("X", "d")
    assert tree.level_nodes(1) == ("Y", "c", "d")
    assert tree.level_names(2) == ("big x", "d")
    assert tree.path("c") == ("c", "c", "X")
    assert tree.path("d") == ("d", "d", "d")
    assert tree.edges(0).tolist() == [[0, 0], [1, 0], [2, 1], [3, 2]]
    assert tree.edges(1).tolist() == [[0, 0], [1, 0], [2, 1]]
    assert dict(tree.parents) == {"a": "Y", "b": "Y", "Y": "X", "c": "X", "X": "R", "d": "R"}
    cut = tree.cut(1)
    assert cut.level_nodes(1) == ("X", "d")
    assert cut.path("a") == ("a", "X")
    assert dict(cut.parents) == {"a": "X", "b": "X", "c": "X", "X": "R", "d": "R"}
    assert "Y" not in cut.labels and cut.labels["X"] == "big x"


def test_equality_hash_and_pickle(embedded):
    form = embedded["form"]
    again = ClassTree.from_parents("form", TREES["form"], leaves=LEAVES)
    assert form == again and hash(form) == hash(again)
    assert form != again.renamed("other")
    assert form != form.cut(2)
    assert len({form, again, form.cut(2)}) == 2
    restored = pickle.loads(pickle.dumps(embedded))
    assert restored == embedded
    assert torch.equal(restored["form"].leaf_index, form.leaf_index)
    assert form.leaf_index is form.leaf_index  # computed once


def test_forest_select_and_reordering(embedded):
    reversed_form = embedded["form"].with_leaf_order(LEAVES[::-1])
    forest = Forest([embedded["symmetry"], reversed_form])
    assert forest.leaves == LEAVES and forest["form"].leaves == LEAVES
    chosen = embedded.select(["corners", "form"], depths={"form": 2})
    assert chosen.names == ("corners", "form")
    assert chosen.depths == {"corners": 2, "form": 2}
    assert chosen["form"] == embedded["form"].cut(2)
    assert embedded.select(["form", "symmetry"], [1, 1]).depths == {"form": 1, "symmetry": 1}
    assert as_forest(embedded["form"]).names == ("form",)
    assert as_forest(embedded) is embedded


def test_coarse_tree():
    tree = build_coarse_tree("c", {"a": "x_1", "b": "x_1", "c": "y"}, ["c", "b", "a"])
    assert tree.depth == 1
    assert tree.level_nodes(1) == ("y", "x_1")
    assert tree.level_names(1) == ("y", "x 1")


# -- user mistakes: one line, naming what is wrong --------------------------------------------


@pytest.mark.parametrize(
    ("build", "fragment"),
    [
        (lambda: ClassTree.from_parents("t", {"a": "A", "A": "B", "B": "A"}), "cycle: A -> B -> A"),
        (lambda: ClassTree.from_parents("t", {"a": "a", "b": "B"}), "cycle: a -> a"),
        (
            lambda: ClassTree.from_parents("t", {"a": "X"}, leaves=["a", "b"]),
            "leaf `b` has no path",
        ),
        (
            lambda: ClassTree.from_parents("t", {"a": "X", "b": "X", "c": "Y"}, leaves=["a", "b"]),
            "node `c`",
        ),
        (
            lambda: ClassTree.from_parents("t", [("a", "X"), ("a", "Y")]),
            "child `a` is listed twice",
        ),
        (lambda: ClassTree.from_parents("t", {}), "non-empty"),
        (lambda: ClassTree.from_parents("t", {"a": "X", "b": "X"}), "no level above its leaves"),
        (lambda: ClassTree.from_parents("t", UNBALANCED, depth=0), "`depth` must be"),
        (lambda: ClassTree.from_parents("t", UNBALANCED, depth=3), "between 1 and 2"),
        (lambda: ClassTree.from_parents("t", UNBALANCED, leaves=["a", "b", "c", "Y"]), "leaf `Y`"),
        (lambda: ClassTree.from_parents("t", UNBALANCED).path("zz"), "`leaf` must be"),
        (lambda: ClassTree.from_parents("t", UNBALANCED).edges(2), "`level` must be"),
        (lambda: ClassTree.from_parents("", UNBALANCED), "`name` must be"),
    ],
)
def test_tree_mistakes(build, fragment):
    with pytest.raises(UserInputError) as caught:
        build()
    message = str(caught.value)
    assert fragment in message and "\n" not in message


def test_forest_mistakes(embedded):
    form, symmetry = embedded["form"], embedded["symmetry"]
    other = ClassTree.from_parents("other", {"x": "P", "circle": "P", "ring": "Q", "y": "Q"})
    with pytest.raises(UserInputError, match="`ellipse`.* only in tree `form`.*`x`, `y` are only"):
        Forest([form, other])
    with pytest.raises(UserInputError, match="`form` repeats"):
        Forest([form, form])
    with pytest.raises(UserInputError, match="one of form, symmetry, corners"):
        embedded["shape"]
    with pytest.raises(UserInputError, match="`depths` must be"):
        embedded.select(["form"], depths=[1, 2])
    with pytest.raises(UserInputError, match="between 1 and 2"):
        embedded.select(["symmetry"], depths={"symmetry": 3})
    with pytest.raises(UserInputError, match="must be the given classes"):
        symmetry.with_leaf_order(LEAVES[:-1])


def test_a_flat_class_list_is_a_tree_of_depth_zero():
    flat = ClassTree.flat("colour", ("red", "green", "blue"))
    assert flat.depth == 0 and flat.level_names(0) == ("red", "green", "blue")
    assert flat.leaf_to_node(0).tolist() == [0, 1, 2]
    assert flat == ClassTree.flat("colour", ("red", "green", "blue"))
    # Without asking for it, a table whose leaves all hang from one root is still refused.
    with pytest.raises(UserInputError, match="no level above its leaves"):
        ClassTree.from_parents("colour", {"red": "c", "green": "c"}, leaves=("red", "green"))
    with pytest.raises(UserInputError, match="must be a non-empty sequence"):
        ClassTree.flat("colour", ())
