"""Tiny copies of file-based datasets in their real on-disk layouts, written by the tests."""

from __future__ import annotations

import numpy as np
from PIL import Image

CLASSES = ("n01440764", "n01443537", "n01484850")


def image(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def write_image_folder(
    root, *, train: int = 4, test: int = 2, classes=CLASSES, seed: int = 0, size=None
):
    """An ImageNet-layout folder: ``train/<wnid>/*.JPEG`` and ``val/<wnid>/*.png`` (images of
    assorted sizes, or all of ``size`` = (width, height))."""
    rng = np.random.default_rng(seed)
    for name in classes:
        (root / "train" / name).mkdir(parents=True)
        (root / "val" / name).mkdir(parents=True)
        for i in range(train):
            width, height = size or (40 + i, 30)
            image(rng, width, height).save(root / "train" / name / f"{name}_{i}.JPEG", "JPEG")
        for i in range(test):
            image(rng, 30, 50).save(root / "val" / name / f"val_{name}_{i}.png")
    return root


def write_tiny_imagenet(root, *, train: int = 4, test: int = 2, seed: int = 0):
    """TinyImageNet's layout: ``train/<wnid>/images/``, ``val/images/`` and its annotations."""
    rng = np.random.default_rng(seed)
    lines = []
    (root / "val" / "images").mkdir(parents=True)
    for name in CLASSES:
        (root / "train" / name / "images").mkdir(parents=True)
        for i in range(train):
            image(rng, 64, 64).save(root / "train" / name / "images" / f"{name}_{i}.JPEG", "JPEG")
        for i in range(test):
            file = f"val_{name}_{i}.JPEG"
            image(rng, 64, 64).save(root / "val" / "images" / file, "JPEG")
            lines.append(f"{file}\t{name}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return root


def write_imagenet(root, *, train: int = 2, test: int = 1, size: int = 8):
    """An image folder with all 1000 ImageNet-1k classes and a few small images each."""
    from trainables.data.class_lists import imagenet1k_classes

    rng = np.random.default_rng(0)
    for name in imagenet1k_classes():
        for split, count in (("train", train), ("val", test)):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                image(rng, size, size).save(folder / f"{name}_{i}.png")
    return root
