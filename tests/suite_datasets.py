"""One root holding tiny copies of every dataset of the ``tecoa16`` suite, each in its real
on-disk format and conventional folder (as a cluster's shared data folder would)."""

from __future__ import annotations

from tests.array_datasets import write_cifar, write_pcam, write_stl10
from tests.image_datasets import (
    CLASSES,
    write_caltech101,
    write_caltech256,
    write_cars,
    write_dtd,
    write_eurosat,
    write_fgvc_aircraft,
    write_flowers,
    write_food101,
    write_imagenet,
    write_pets,
    write_sun397,
    write_tiny_imagenet,
)
from trainables.data.benchmark_prompts import benchmark_classnames

#: EuroSAT's ten class folders (sorted), which clip_benchmark's ten names follow.
EUROSAT_FOLDERS = (
    "AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture",
    "PermanentCrop", "Residential", "River", "SeaLake",
)  # fmt: skip
#: 102 folder names that sort as Caltech-101's do: the background first, then the capitalised
#: classes, then the rest (clip_benchmark names them by that position).
CALTECH101_FOLDERS = (
    "BACKGROUND_Google",
    "Faces",
    "Faces_easy",
    "Leopards",
    "Motorbikes",
    *(f"class_{n:03d}" for n in range(97)),
)


def pets_breeds() -> tuple[str, ...]:
    """Image-id prefixes of the 37 breeds whose title-cased names are clip_benchmark's."""
    return tuple(name.replace(" ", "_").lower() for name in benchmark_classnames("pets"))


def write_suite_root(root):
    """Tiny copies of the 16 datasets of ``tecoa16`` under ``root``; returns ``root``."""
    write_imagenet(root / "imagenet", train=2, test=1)
    write_tiny_imagenet(root / "tiny-imagenet-200", train=2, test=1)
    (root / "tiny-imagenet-200" / "words.txt").write_text(
        "".join(f"{wnid}\tfish {n}, a fish\n" for n, wnid in enumerate(CLASSES))
    )
    write_cifar(root, "cifar10")
    write_cifar(root, "cifar100")
    write_stl10(root, train_per_class=1, test_per_class=1)
    write_pcam(root, per_split=4)
    write_sun397(root, per_class=3)
    write_food101(root, per_class=3, test=1)
    write_pets(root, breeds=pets_breeds(), per_class=3, test=1)
    write_flowers(root, classes=3, per_class=6)
    write_dtd(root, per_class=3)
    write_eurosat(root, classes=EUROSAT_FOLDERS, per_class=3)
    write_fgvc_aircraft(root, per_class=3)
    write_caltech101(root, classes=CALTECH101_FOLDERS, per_class=3)
    write_caltech256(root, per_class=3)
    write_cars(root, per_class=3, test=1)
    return root
