"""The class trees shipped with the tool, and how each one is (re)built.

Shipped files live in ``trainables/hierarchy/trees/`` and are produced by
``raysearch trees build shipped`` (:func:`build_shipped`), never written by hand:

* ``embedded``: a forest of the embedded dataset's three trees (form, symmetry, corners);
* ``embedded-heldout-shapes``: the tree of the twelve shapes only the base model's pretraining
  sees (``strokes``), for the zero-shot suite;
* ``cifar10-wordnet``, ``cifar100-wordnet``: WordNet trees of the CIFAR classes (names resolved
  with the overrides in :data:`CIFAR100_SYNSETS` where a name is ambiguous);
* ``cifar100-coarse``: CIFAR-100's 20 standard superclasses (depth 1);
* ``imagenet1k-wordnet``: the WordNet tree of ImageNet-1k at depth 5, leaves being the 1000 ids
  in timm's order, labelled with the first name of each description;
* ``cifar100-wordnet-balanced``, ``imagenet1k-wordnet-balanced``: the same WordNet trees at
  their full depth, re-levelled so that levels are cuts of balanced sizes rather than counted
  from the root (:mod:`trainables.hierarchy.balanced`);
* ``embedded-text``: the embedded classes clustered by the base model's text embeddings
  (:data:`MODEL_BUILT`: built by the command, which loads the model).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

from trainables.errors import UserInputError, must
from trainables.hierarchy.tables import load, save
from trainables.hierarchy.tree import ClassTree, Forest, build_coarse_tree

__all__ = [
    "CIFAR100_SYNSETS",
    "SHIPPED",
    "SHIPPED_DEPTHS",
    "TREES_DIR",
    "build_one",
    "build_shipped",
    "list_shipped",
    "load_shipped",
    "resolve",
]

TREES_DIR = Path(__file__).parent / "trees"

#: Shipped name -> file name inside :data:`TREES_DIR`.
SHIPPED: dict[str, str] = {
    "embedded": "embedded.json",
    "embedded-heldout-shapes": "embedded-heldout-shapes.json",
    "cifar10-wordnet": "cifar10-wordnet.json",
    "cifar100-wordnet": "cifar100-wordnet.json",
    "cifar100-coarse": "cifar100-coarse.json",
    "imagenet1k-wordnet": "imagenet1k-wordnet.json",
    "cifar100-wordnet-balanced": "cifar100-wordnet-balanced.json",
    "imagenet1k-wordnet-balanced": "imagenet1k-wordnet-balanced.json",
    "embedded-text": "embedded-text.json",
}
#: Shipped trees clustered from a model's text embeddings: ``raysearch trees build shipped``
#: rebuilds them with the model (the command, not this module, loads models).
MODEL_BUILT: tuple[str, ...] = ("embedded-text",)

#: Depths of the shipped WordNet trees (ImageNet's 5 follows the method).
SHIPPED_DEPTHS: dict[str, int] = {
    "cifar10-wordnet": 3,
    "cifar100-wordnet": 4,
    "imagenet1k-wordnet": 5,
    "cifar100-wordnet-balanced": 4,
    "imagenet1k-wordnet-balanced": 5,
}

#: WordNet senses of the CIFAR-100 class names whose first noun sense is not the pictured one
#: (or that WordNet does not list, such as "aquarium_fish").
CIFAR100_SYNSETS: dict[str, str] = {
    "apple": "apple.n.01",
    "aquarium_fish": "goldfish.n.01",
    "beaver": "beaver.n.07",
    "castle": "castle.n.02",
    "cloud": "cloud.n.02",
    "dolphin": "dolphin.n.02",
    "flatfish": "flatfish.n.02",
    "forest": "forest.n.02",
    "girl": "female_child.n.01",
    "keyboard": "computer_keyboard.n.01",
    "lawn_mower": "lawn_mower.n.01",
    "leopard": "leopard.n.02",
    "lobster": "lobster.n.02",
    "maple_tree": "maple.n.02",
    "mouse": "mouse.n.01",
    "mushroom": "mushroom.n.05",
    "otter": "otter.n.02",
    "pickup_truck": "pickup.n.01",
    "plain": "plain.n.01",
    "plate": "plate.n.04",
    "raccoon": "raccoon.n.02",
    "ray": "ray.n.07",
    "seal": "seal.n.09",
    "shrew": "shrew.n.02",
    "skunk": "skunk.n.04",
    "sweet_pepper": "sweet_pepper.n.02",
    "table": "table.n.02",
    "tank": "tank.n.01",
    "television": "television_receiver.n.01",
    "tiger": "tiger.n.02",
    "trout": "trout.n.02",
    "turtle": "turtle.n.02",
    "whale": "baleen_whale.n.01",
}


def _embedded(wordnet_dir: str | Path | None) -> Forest:
    from trainables.data.embedded_taxonomy import LEAVES, TREES

    return Forest(
        ClassTree.from_parents(name, table, leaves=LEAVES) for name, table in TREES.items()
    )


def _embedded_heldout(wordnet_dir: str | Path | None) -> ClassTree:
    from trainables.data.embedded_taxonomy import HELD_OUT_SHAPES, HELD_OUT_TREES

    return ClassTree.from_parents("strokes", HELD_OUT_TREES["strokes"], leaves=HELD_OUT_SHAPES)


def _cifar_wordnet(dataset: str, synsets: dict[str, str], *, full: bool = False):
    def build(wordnet_dir: str | Path | None) -> ClassTree:
        from trainables.data.class_lists import dataset_classes, dataset_labels
        from trainables.hierarchy.wordnet import build_wordnet_tree

        name = f"{dataset}-wordnet"
        return build_wordnet_tree(
            name,
            dataset_classes(dataset),
            depth=None if full else SHIPPED_DEPTHS[name],
            synsets=synsets,
            labels=dict(zip(dataset_classes(dataset), dataset_labels(dataset), strict=True)),
            wordnet_dir=wordnet_dir,
        )

    return build


def _cifar100_coarse(wordnet_dir: str | Path | None) -> ClassTree:
    from trainables.data.class_lists import CIFAR100_CLASSES, CIFAR100_FINE_TO_COARSE

    return build_coarse_tree("cifar100-coarse", CIFAR100_FINE_TO_COARSE, CIFAR100_CLASSES)


def _imagenet_wordnet(wordnet_dir: str | Path | None, *, full: bool = False) -> ClassTree:
    from trainables.data.class_lists import imagenet1k_classes, imagenet1k_names
    from trainables.hierarchy.wordnet import build_wordnet_tree

    return build_wordnet_tree(
        "imagenet1k-wordnet",
        imagenet1k_classes(),
        depth=None if full else SHIPPED_DEPTHS["imagenet1k-wordnet"],
        labels=dict(zip(imagenet1k_classes(), imagenet1k_names(), strict=True)),
        wordnet_dir=wordnet_dir,
    )


def _balanced(name: str, whole: Callable[[str | Path | None], ClassTree]):
    """The WordNet tree of ``whole`` at its full depth, re-levelled into balanced levels
    (:mod:`trainables.hierarchy.balanced`)."""

    def build(wordnet_dir: str | Path | None) -> ClassTree:
        from trainables.hierarchy.balanced import balanced_tree

        return balanced_tree(whole(wordnet_dir), SHIPPED_DEPTHS[name], name=name)

    return build


_BUILDERS: dict[str, Callable[[str | Path | None], ClassTree | Forest]] = {
    "embedded": _embedded,
    "embedded-heldout-shapes": _embedded_heldout,
    "cifar10-wordnet": _cifar_wordnet("cifar10", {}),
    "cifar100-wordnet": _cifar_wordnet("cifar100", CIFAR100_SYNSETS),
    "cifar100-coarse": _cifar100_coarse,
    "imagenet1k-wordnet": _imagenet_wordnet,
    "cifar100-wordnet-balanced": _balanced(
        "cifar100-wordnet-balanced", _cifar_wordnet("cifar100", CIFAR100_SYNSETS, full=True)
    ),
    "imagenet1k-wordnet-balanced": _balanced(
        "imagenet1k-wordnet-balanced", functools.partial(_imagenet_wordnet, full=True)
    ),
}


def list_shipped() -> tuple[str, ...]:
    """Names of the shipped trees and forests."""
    return tuple(SHIPPED)


def _check_shipped(name: str) -> str:
    if name not in SHIPPED:
        raise must("name", f"a shipped tree ({', '.join(SHIPPED)})", name)
    return name


@functools.cache
def load_shipped(name: str) -> ClassTree | Forest:
    """A shipped tree or forest, loaded from its file (trees are immutable, so cached)."""
    path = TREES_DIR / SHIPPED[_check_shipped(name)]
    if not path.is_file():
        raise UserInputError(
            f"the shipped tree file {path} is missing; run `raysearch trees build shipped`."
        )
    return load(path)


def build_one(name: str, *, wordnet_dir: str | Path | None = None) -> ClassTree | Forest:
    """Build one shipped tree or forest from its source (not from its file); the ones of
    :data:`MODEL_BUILT` are built by ``raysearch trees build shipped``."""
    if _check_shipped(name) in MODEL_BUILT:
        raise must("name", "a tree built without a model (see `raysearch trees build`)", name)
    return _BUILDERS[name](wordnet_dir)


def build_shipped(
    out_dir: str | Path | None = None,
    *,
    names: tuple[str, ...] | None = None,
    wordnet_dir: str | Path | None = None,
) -> dict[str, Path]:
    """Rebuild the shipped files (all built without a model, or ``names``) into ``out_dir``
    (default :data:`TREES_DIR`).

    Returns ``{name: written path}``.
    """
    out = Path(out_dir) if out_dir is not None else TREES_DIR
    written = {}
    for name in names or [name for name in list_shipped() if name not in MODEL_BUILT]:
        written[name] = save(build_one(name, wordnet_dir=wordnet_dir), out / SHIPPED[name])
    if out.resolve() == TREES_DIR.resolve():
        load_shipped.cache_clear()
    return written


def resolve(name_or_path: str | Path) -> ClassTree | Forest:
    """A tree or forest from a shipped name, ``shipped/tree`` (e.g. ``embedded/form``) or a file."""
    text = str(name_or_path)
    if text in SHIPPED:
        return load_shipped(text)
    head, _, tail = text.partition("/")
    if head in SHIPPED and tail:
        shipped = load_shipped(head)
        if isinstance(shipped, Forest):
            return shipped[tail]
        if tail == shipped.name:
            return shipped
        raise must("tree", f"`{shipped.name}` (the only tree of `{head}`)", tail)
    path = Path(text).expanduser()
    if path.is_file():
        return load(path)
    raise must(
        "tree",
        f"a shipped name ({', '.join(SHIPPED)}), `shipped/tree` such as embedded/form, "
        "or an existing file",
        text,
    )
