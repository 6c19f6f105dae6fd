"""Class names of the datasets the tool knows, in label order.

* ``embedded``: the procedurally rendered default (``embedded_taxonomy.LEAVES``), and the other
  embedded datasets (``embedded-world`` for pretraining, the zero-shot suite's
  ``embedded-heldout-shapes``, ``-colour``, ``-size``, ``-background``);
* ``cifar10`` and ``cifar100``: torchvision's label order (CIFAR-100's fine labels are
  alphabetical), plus CIFAR-100's 20 coarse superclasses;
* ``imagenet1k``: the 1000 WordNet ids in timm's (the standard) order, named by the first name
  of each description (timm is imported only when asked for);
* ``tinyimagenet``: its 200 WordNet ids (the folders of ``train/``), named by ``words.txt``;
* the zero-shot suite's other datasets (``stl10``, ``pcam``, and the file layouts of
  :mod:`trainables.data.suite_layouts`): their class ids as their own files list them (read
  from ``root``, except STL-10's and PCAM's fixed ones), named by clip_benchmark where it
  cleans them (:mod:`trainables.data.benchmark_prompts`) and else by their ids made readable
  (Food-101's and SUN397's ``_`` and ``/`` as spaces, Caltech-256's number prefix dropped);
* ``imagefolder``: any image folder, its classes the folders of ``train/`` in sorted order.

Class ids are the names used as tree leaves; :func:`dataset_labels` gives display names for
prompts (underscores as spaces; ImageNet's first names, which may repeat: two "crane" classes).
"""

from __future__ import annotations

import functools
import re

from trainables.data.array_files import ARRAY_LAYOUTS
from trainables.data.benchmark_prompts import benchmark_classnames
from trainables.data.embedded_spec import RECIPES
from trainables.data.embedded_taxonomy import LEAVES as EMBEDDED_CLASSES
from trainables.data.locations import dataset_root, image_folder_root
from trainables.data.suite_layouts import LAYOUTS
from trainables.errors import UserInputError, must

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR100_CLASSES",
    "CIFAR100_COARSE",
    "CIFAR100_FINE_TO_COARSE",
    "DATASETS",
    "EMBEDDED_CLASSES",
    "dataset_classes",
    "dataset_labels",
    "imagenet1k_classes",
    "imagenet1k_names",
]

# fmt: off
CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)

CIFAR100_CLASSES: tuple[str, ...] = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle",
    "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle",
    "caterpillar", "cattle", "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch",
    "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox",
    "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom",
    "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road",
    "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake",
    "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone",
    "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale",
    "willow_tree", "wolf", "woman", "worm",
)
# fmt: on

#: CIFAR-100's 20 superclasses (coarse label order) and their five fine classes each.
CIFAR100_COARSE: dict[str, tuple[str, ...]] = {
    "aquatic_mammals": ("beaver", "dolphin", "otter", "seal", "whale"),
    "fish": ("aquarium_fish", "flatfish", "ray", "shark", "trout"),
    "flowers": ("orchid", "poppy", "rose", "sunflower", "tulip"),
    "food_containers": ("bottle", "bowl", "can", "cup", "plate"),
    "fruit_and_vegetables": ("apple", "mushroom", "orange", "pear", "sweet_pepper"),
    "household_electrical_devices": ("clock", "keyboard", "lamp", "telephone", "television"),
    "household_furniture": ("bed", "chair", "couch", "table", "wardrobe"),
    "insects": ("bee", "beetle", "butterfly", "caterpillar", "cockroach"),
    "large_carnivores": ("bear", "leopard", "lion", "tiger", "wolf"),
    "large_man-made_outdoor_things": ("bridge", "castle", "house", "road", "skyscraper"),
    "large_natural_outdoor_scenes": ("cloud", "forest", "mountain", "plain", "sea"),
    "large_omnivores_and_herbivores": ("camel", "cattle", "chimpanzee", "elephant", "kangaroo"),
    "medium_mammals": ("fox", "porcupine", "possum", "raccoon", "skunk"),
    "non-insect_invertebrates": ("crab", "lobster", "snail", "spider", "worm"),
    "people": ("baby", "boy", "girl", "man", "woman"),
    "reptiles": ("crocodile", "dinosaur", "lizard", "snake", "turtle"),
    "small_mammals": ("hamster", "mouse", "rabbit", "shrew", "squirrel"),
    "trees": ("maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"),
    "vehicles_1": ("bicycle", "bus", "motorcycle", "pickup_truck", "train"),
    "vehicles_2": ("lawn_mower", "rocket", "streetcar", "tank", "tractor"),
}

#: ``{fine class: coarse class}`` for CIFAR-100.
CIFAR100_FINE_TO_COARSE: dict[str, str] = {
    fine: coarse for coarse, fines in CIFAR100_COARSE.items() for fine in fines
}


@functools.lru_cache(maxsize=1)
def _imagenet_info():
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    ids = tuple(info.index_to_label_name(i) for i in range(info.num_classes()))
    names = tuple(
        info.index_to_description(i).split(",")[0].strip() for i in range(info.num_classes())
    )
    return ids, names


def imagenet1k_classes() -> tuple[str, ...]:
    """The 1000 ImageNet-1k WordNet ids (``n01440764``, ...) in label order."""
    return _imagenet_info()[0]


def imagenet1k_names() -> tuple[str, ...]:
    """The first name of each ImageNet-1k class description ("tench", ...), in label order."""
    return _imagenet_info()[1]


def _readable(names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(name.replace("_", " ") for name in names)


def _embedded_classes(name: str):
    return lambda: RECIPES[name].classes


def _fixed(classes: tuple[str, ...]):
    return lambda: classes


# Every embedded dataset, in the order of its recipes: the fine-tuning one, the pretraining
# world and the zero-shot suite.
_CLASSES = {
    **{name: _embedded_classes(name) for name in RECIPES},
    "cifar10": lambda: CIFAR10_CLASSES,
    "cifar100": lambda: CIFAR100_CLASSES,
    "imagenet1k": imagenet1k_classes,
    **{name: _fixed(layout.classes) for name, layout in ARRAY_LAYOUTS.items()},
}
_LABELS = {
    **{name: _embedded_classes(name) for name in RECIPES},
    "cifar10": lambda: _readable(CIFAR10_CLASSES),
    "cifar100": lambda: _readable(CIFAR100_CLASSES),
    "imagenet1k": imagenet1k_names,
    **{name: _fixed(layout.classes) for name, layout in ARRAY_LAYOUTS.items()},
}

#: A dataset whose classes are the class folders of its ``root`` (any image folder).
IMAGE_FOLDER = "imagefolder"
#: Datasets whose class ids are read from their files under ``root``.
ON_DISK: tuple[str, ...] = ("tinyimagenet", *LAYOUTS, IMAGE_FOLDER)
#: Names accepted by :func:`dataset_classes`.
DATASETS: tuple[str, ...] = (*_CLASSES, *ON_DISK)


def _check(name: str) -> str:
    if name not in DATASETS:
        raise must("dataset", f"one of {', '.join(DATASETS)}", name)
    return name


def _folder_classes(name: str, root) -> tuple[str, ...]:
    from trainables.data.image_files import folder_classes

    if root is None and name == IMAGE_FOLDER:
        raise must("data.root", f"the image folder of dataset {IMAGE_FOLDER!r}", None)
    return folder_classes(image_folder_root(name, root))


def _on_disk_classes(name: str, root) -> tuple[str, ...]:
    from trainables.data.suite_layouts import layout_classes

    if name in LAYOUTS:
        return layout_classes(name, dataset_root(root))
    return _folder_classes(name, root)


def _tinyimagenet_names(root, wnids: tuple[str, ...]) -> tuple[str, ...]:
    """The first name of each id in TinyImageNet's ``words.txt`` (its id where none)."""
    from trainables.readers import read_text

    words = image_folder_root("tinyimagenet", root) / "words.txt"
    names = {}
    if words.is_file():
        for line in read_text(words).splitlines():
            wnid, _, description = line.partition("\t")
            names[wnid] = description.split(",")[0].strip()
    return tuple(names.get(wnid) or wnid for wnid in wnids)


def _readable_id(name: str, class_id: str) -> str:
    if name == "caltech256":  # "063.electric-guitar-101" -> "electric guitar"
        class_id = re.sub(r"^\d+\.|-101$", "", class_id).replace("-", " ")
    return class_id.replace("_", " ").replace("/", " ")


def _on_disk_labels(name: str, root) -> tuple[str, ...]:
    classes = _on_disk_classes(name, root)
    if name == "tinyimagenet":
        return _tinyimagenet_names(root, classes)
    cleaned = benchmark_classnames(name)
    if cleaned is None:
        return tuple(_readable_id(name, class_id) for class_id in classes)
    if len(cleaned) != len(classes):
        raise UserInputError(
            f"{name}: must have the {len(cleaned)} classes clip_benchmark names, but its files "
            f"under '{dataset_root(root)}' list {len(classes)}: the copy is incomplete."
        )
    return cleaned


def dataset_classes(name: str, root=None) -> tuple[str, ...]:
    """Class ids of a dataset in label order (the leaves of its trees); ``root`` is read only
    for the datasets of :data:`ON_DISK`, whose classes their files list."""
    if _check(name) in ON_DISK:
        return _on_disk_classes(name, root)
    return _CLASSES[name]()


def dataset_labels(name: str, root=None) -> tuple[str, ...]:
    """Display names of a dataset's classes for prompts, aligned with :func:`dataset_classes`."""
    if _check(name) in ON_DISK:
        return _on_disk_labels(name, root)
    return _LABELS[name]()
