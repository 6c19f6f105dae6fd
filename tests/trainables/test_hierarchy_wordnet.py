"""WordNet trees against the WordNet 3.0 database in /usr/share/wordnet, the class lists, and the
shipped tree files against a fresh rebuild."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainables.data.class_lists import (
    CIFAR100_CLASSES,
    CIFAR100_COARSE,
    CIFAR100_FINE_TO_COARSE,
    DATASETS,
    dataset_classes,
    dataset_labels,
)
from trainables.errors import UserInputError
from trainables.hierarchy import ClassTree, Forest, build_wordnet_tree, load_shipped, resolve
from trainables.hierarchy import wordnet as wn_module
from trainables.hierarchy.shipped import SHIPPED, SHIPPED_DEPTHS, TREES_DIR, build_one
from trainables.suites import TECOA16

DATABASE = Path("/usr/share/wordnet")
needs_wordnet = pytest.mark.skipif(
    not (DATABASE / "data.noun").is_file(), reason="WordNet 3.0 (wordnet-base) is not installed"
)

KIT_FOX, ARCTIC_FOX, RETRIEVER, LION, TIGER, GOLDFISH = (
    "n02119789",
    "n02120079",
    "n02099601",
    "n02129165",
    "n02129604",
    "n01443537",
)
IDS = [KIT_FOX, ARCTIC_FOX, RETRIEVER, LION, TIGER, GOLDFISH]
#: The same classes by name (first noun senses), by synset name, with spaces and capitals.
NAMES = ["kit_fox", "Arctic fox", "golden_retriever", "lion", "tiger.n.02", "goldfish"]


@pytest.fixture(scope="module")
def wordnet_cache(tmp_path_factory):
    """A private cache for the nltk layout of the WordNet database (built once per module)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAYSEARCH_CACHE", str(tmp_path_factory.mktemp("cache")))
        patch.delenv(wn_module.WORDNET_ENV, raising=False)
        yield Path(tmp_path_factory.getbasetemp())


@needs_wordnet
def test_database_layout_has_generated_lexnames(wordnet_cache):
    reader = wn_module.load_wordnet(DATABASE)
    root = Path(reader.root.path)
    lines = (root / "lexnames").read_text().splitlines()
    assert len(lines) == 45
    assert lines[0] == "00\tadj.all\t3" and lines[44] == "44\tadj.ppl\t3"
    assert lines[5] == "05\tnoun.animal\t1"
    assert (root / "data.noun").is_file() and not (root / "data.noun").is_symlink()
    assert reader.synset("kit_fox.n.01").lexname() == "noun.animal"
    assert wn_module.load_wordnet(DATABASE) is reader  # loaded once


@needs_wordnet
def test_kit_fox_path(wordnet_cache):
    tree = build_wordnet_tree("pets", IDS)
    labels = [tree.labels[node] for node in tree.path(KIT_FOX)]
    assert labels[0] == "kit fox"
    for ancestor in ("fox", "canine", "carnivore"):
        assert ancestor in labels
    assert tree.path(KIT_FOX)[1] == tree.path(ARCTIC_FOX)[1]  # both under "fox"
    assert [tree.labels[node] for node in tree.path(LION)] == [
        "lion",
        "lion",
        "big cat",
        "carnivore",
    ]
    assert tree.path(GOLDFISH)[1] == GOLDFISH  # a shallow leaf is its own ancestor
    # No internal node with a single child survives (chains are compressed).
    children: dict[str, int] = {}
    for parent in tree.parents.values():
        children[parent] = children.get(parent, 0) + 1
    assert all(count >= 2 for count in children.values())


@needs_wordnet
def test_names_and_ids_give_the_same_tree(wordnet_cache):
    by_id = build_wordnet_tree("t", IDS)
    by_name = build_wordnet_tree("t", NAMES)
    assert by_name.depth == by_id.depth
    assert by_name.leaf_index.equal(by_id.leaf_index)
    as_id = dict(zip(NAMES, IDS, strict=True))
    for level in range(1, by_id.depth + 1):
        nodes = tuple(as_id.get(node, node) for node in by_name.level_nodes(level))
        assert nodes == by_id.level_nodes(level)
    assert by_name.labels["Arctic fox"] == "Arctic fox" and by_id.labels[ARCTIC_FOX] == "Arctic fox"
    assert by_name.labels["tiger.n.02"] == "tiger"
    letters = list("abcdef")
    overridden = build_wordnet_tree("t", letters, synsets=dict(zip(letters, IDS, strict=True)))
    assert overridden.leaf_index.equal(by_id.leaf_index)
    assert build_wordnet_tree("t", IDS, depth=1).level_nodes(1) == by_id.level_nodes(by_id.depth)


@needs_wordnet
@pytest.mark.parametrize(
    ("leaves", "synsets", "fragment"),
    [
        (["kit_fox", "n99999999"], None, "`n99999999` is not a WordNet 3.0 noun id"),
        (["kit_fox", "n02119790"], None, "not a WordNet 3.0 noun id"),
        (["kit_fox", "blorfle"], None, "`blorfle` is not a WordNet noun"),
        (["kit_fox", "fox.n.99"], None, "`fox.n.99` is not a WordNet noun synset"),
        (["kit_fox", "ray"], {"ray": "ray.n.77"}, "leaf `ray`: `ray.n.77`"),
        (["kit_fox", "fox"], None, "leaf `fox` is a WordNet ancestor of leaf `kit_fox`"),
        (["kit_fox", KIT_FOX], None, "are the same WordNet synset kit_fox.n.01"),
        (["kit_fox", "goldfish"], {"carp": "carp.n.01"}, "`synsets` must be keyed by leaves"),
    ],
)
def test_wordnet_mistakes(wordnet_cache, leaves, synsets, fragment):
    with pytest.raises(UserInputError) as caught:
        build_wordnet_tree("t", leaves, synsets=synsets)
    assert fragment in str(caught.value) and "\n" not in str(caught.value)


@needs_wordnet
def test_depth_is_checked(wordnet_cache):
    with pytest.raises(UserInputError, match="`depth` must be an integer between 1 and"):
        build_wordnet_tree("t", IDS, depth=40)


def test_missing_wordnet_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setenv("RAYSEARCH_CACHE", str(tmp_path))
    monkeypatch.delenv(wn_module.WORDNET_ENV, raising=False)
    monkeypatch.setattr(wn_module, "DEFAULT_WORDNET_DIR", tmp_path / "nowhere")
    monkeypatch.setattr(wn_module, "_own_nltk_wordnet", lambda: False)
    with pytest.raises(UserInputError, match="apt-get install wordnet-base.*--wordnet-dir"):
        wn_module.load_wordnet()
    with pytest.raises(UserInputError, match="`wordnet_dir` must be a WordNet 3.0 database"):
        wn_module.load_wordnet(tmp_path)
    monkeypatch.setenv(wn_module.WORDNET_ENV, str(tmp_path))
    with pytest.raises(UserInputError, match=f"`{wn_module.WORDNET_ENV}` must be"):
        wn_module.load_wordnet()


# -- class lists --------------------------------------------------------------------------------


def test_class_lists():
    assert dataset_classes("cifar10")[:3] == ("airplane", "automobile", "bird")
    assert len(CIFAR100_CLASSES) == 100 and list(CIFAR100_CLASSES) == sorted(CIFAR100_CLASSES)
    assert len(CIFAR100_COARSE) == 20
    assert all(len(fine) == 5 for fine in CIFAR100_COARSE.values())
    assert set(CIFAR100_FINE_TO_COARSE) == set(CIFAR100_CLASSES)
    assert dataset_labels("cifar100")[1] == "aquarium fish"
    assert len(dataset_classes("embedded")) == 20
    with pytest.raises(UserInputError, match="one of embedded, embedded-world, .*, imagefolder"):
        dataset_classes("mnist")
    assert DATASETS[:9] == (
        "embedded",
        "embedded-world",
        "embedded-heldout-shapes",
        "embedded-colour",
        "embedded-size",
        "embedded-background",
        "cifar10",
        "cifar100",
        "imagenet1k",
    )
    assert set(TECOA16) < set(DATASETS) and DATASETS[-1] == "imagefolder"
    assert dataset_classes("embedded-size") == ("small", "medium", "large")


def test_imagenet_classes():
    ids, names = dataset_classes("imagenet1k"), dataset_labels("imagenet1k")
    assert len(ids) == len(set(ids)) == 1000
    assert (ids[0], names[0]) == ("n01440764", "tench")
    assert names.count("crane") == 2


# -- shipped trees --------------------------------------------------------------------------------


def test_shipped_files_exist_and_resolve():
    assert all((TREES_DIR / file).is_file() for file in SHIPPED.values())
    forest = load_shipped("embedded")
    assert isinstance(forest, Forest) and forest.names == ("form", "symmetry", "corners")
    assert resolve("embedded/form") == forest["form"]
    assert resolve(str(TREES_DIR / SHIPPED["cifar100-coarse"])) == load_shipped("cifar100-coarse")
    with pytest.raises(UserInputError, match="a shipped name"):
        resolve("no-such-tree")


def test_shipped_imagenet_tree():
    tree = load_shipped("imagenet1k-wordnet")
    assert isinstance(tree, ClassTree)
    assert len(tree.leaves) == 1000 and tree.depth == 5
    assert tree.leaves == dataset_classes("imagenet1k")
    assert tree.level_names(0) == dataset_labels("imagenet1k")


def test_trees_built_from_a_model_are_not_built_here():
    from trainables.hierarchy.shipped import MODEL_BUILT

    with pytest.raises(UserInputError, match="a tree built without a model"):
        build_one(MODEL_BUILT[0])


@pytest.mark.parametrize("name", [name for name in SHIPPED if name != "embedded-text"])
def test_shipped_files_equal_a_fresh_build(wordnet_cache, name):
    if "wordnet" in name and not (DATABASE / "data.noun").is_file():
        pytest.skip("WordNet 3.0 (wordnet-base) is not installed")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(wn_module.WORDNET_ENV, raising=False)
        fresh = build_one(name, wordnet_dir=DATABASE if "wordnet" in name else None)
    assert fresh == load_shipped(name)
    if name in SHIPPED_DEPTHS:
        assert fresh.depth == SHIPPED_DEPTHS[name]
        assert len(fresh.level_nodes(fresh.depth)) >= 2
