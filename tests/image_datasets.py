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


# -- the zero-shot suite's datasets, as torchvision 0.29 writes them with download=True ----------


def _jpeg(rng: np.random.Generator, path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image(rng, 8, 8).save(path, "JPEG")


def _lines(path, lines) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))


def write_food101(
    root, *, classes=("churros", "apple_pie", "baby_back_ribs"), per_class=8, test=3, seed=0
):
    """``food-101/images/<class>/<id>.jpg`` and ``meta/{train,test}.json`` (each class's ids,
    ``<class>/<id>``; keys in the order given, which need not be sorted)."""
    import json

    rng = np.random.default_rng(seed)
    base = root / "food-101"
    meta = {"train": {}, "test": {}}
    for number, name in enumerate(classes):
        ids = [f"{name}/{100_000 * (number + 1) + 37 * i}" for i in range(per_class)]
        for image_id in ids:
            _jpeg(rng, base / "images" / f"{image_id}.jpg")
        meta["train"][name], meta["test"][name] = ids[test:], ids[:test]
    (base / "meta").mkdir()
    for split, content in meta.items():
        (base / "meta" / f"{split}.json").write_text(json.dumps(content))
    return root


PETS_BREEDS = ("Abyssinian", "american_bulldog", "Bengal", "english_cocker_spaniel")


def write_pets(root, *, breeds=PETS_BREEDS, per_class=8, test=3, seed=0):
    """``oxford-iiit-pet/images/<breed>_<n>.jpg`` and ``annotations/{trainval,test}.txt``
    (``<image id> <class id> <species> <breed id>``; cats' breeds capitalised, dogs' not)."""
    rng = np.random.default_rng(seed)
    base = root / "oxford-iiit-pet"
    lists = {"trainval": [], "test": []}
    for label, breed in enumerate(breeds, 1):
        species = 1 if breed[0].isupper() else 2
        for n in range(1, per_class + 1):
            _jpeg(rng, base / "images" / f"{breed}_{n}.jpg")
            split = "test" if n <= test else "trainval"
            lists[split].append(f"{breed}_{n} {label} {species} {label}")
    for split, lines in lists.items():
        _lines(base / "annotations" / f"{split}.txt", lines)
    return root


def write_flowers(root, *, classes=4, per_class=9, seed=0):
    """``flowers-102/jpg/image_<id>.jpg``, ``imagelabels.mat`` (``labels``: 1-based, uint8) and
    ``setid.mat`` (``trnid``, ``valid``, ``tstid``: image ids from 1, 3 : 2 : rest of a class),
    images of the first ``classes`` of the 102 classes, interleaved."""
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    base = root / "flowers-102"
    labels = np.tile(np.arange(1, classes + 1, dtype=np.uint8), per_class)
    sets = {"trnid": [], "valid": [], "tstid": []}
    for image_id in range(1, len(labels) + 1):
        _jpeg(rng, base / "jpg" / f"image_{image_id:05d}.jpg")
        rank = (image_id - 1) // classes  # the how-many-th image of its class
        sets["trnid" if rank < 3 else "valid" if rank < 5 else "tstid"].append(image_id)
    savemat(base / "imagelabels.mat", {"labels": labels[None, :]})
    savemat(base / "setid.mat", {k: np.array(v, dtype=np.uint16)[None, :] for k, v in sets.items()})
    return root


def write_dtd(root, *, classes=("banded", "blotchy", "zigzagged"), per_class=9, seed=0):
    """``dtd/dtd/images/<class>/<class>_<n>.jpg`` and ``labels/{train,val,test}1.txt``
    (``<class>/<file>``; a third of every class each)."""
    rng = np.random.default_rng(seed)
    base = root / "dtd" / "dtd"
    lists = {"train": [], "val": [], "test": []}
    for name in classes:
        for n in range(1, per_class + 1):
            file = f"{name}_{n:04d}.jpg"
            _jpeg(rng, base / "images" / name / file)
            lists[("train", "val", "test")[n % 3]].append(f"{name}/{file}")
    for split, lines in lists.items():
        _lines(base / "labels" / f"{split}1.txt", lines)
    return root


def _class_folders(base, classes, per_class, name_of, seed) -> None:
    rng = np.random.default_rng(seed)
    for label, name in enumerate(classes):
        count = per_class[label] if isinstance(per_class, (tuple, list)) else per_class
        for n in range(1, count + 1):
            _jpeg(rng, base / name / name_of(label, name, n))


def write_eurosat(root, *, classes=("AnnualCrop", "Forest", "River"), per_class=12, seed=0):
    """``eurosat/2750/<class>/<class>_<n>.jpg`` (unpadded numbers, as EuroSAT's)."""
    _class_folders(
        root / "eurosat" / "2750", classes, per_class, lambda _, c, n: f"{c}_{n}.jpg", seed
    )
    return root


CALTECH101_CLASSES = ("BACKGROUND_Google", "Faces", "Faces_easy", "accordion")


def write_caltech101(root, *, classes=CALTECH101_CLASSES, per_class=(6, 11, 5, 1), seed=0):
    """``caltech101/101_ObjectCategories/<class>/image_<nnnn>.jpg``."""
    base = root / "caltech101" / "101_ObjectCategories"
    _class_folders(base, classes, per_class, lambda _, c, n: f"image_{n:04d}.jpg", seed)
    return root


CALTECH256_CLASSES = ("001.ak47", "002.american-flag", "003.backpack")


def write_caltech256(root, *, classes=CALTECH256_CLASSES, per_class=(7, 3, 10), seed=0):
    """``caltech256/256_ObjectCategories/<nnn>.<class>/<nnn>_<nnnn>.jpg``, and a subfolder of
    copies in the second class (the real ``056.dog/greg/``) that no reader counts."""
    base = root / "caltech256" / "256_ObjectCategories"
    _class_folders(base, classes, per_class, lambda i, _, n: f"{i + 1:03d}_{n:04d}.jpg", seed)
    _jpeg(np.random.default_rng(seed), base / classes[1] / "greg" / f"002_{99:04d}.jpg")
    return root


CARS_CLASSES = (
    "AM General Hummer SUV 2000",
    "Acura RL Sedan 2012",
    "Ram C/V Cargo Van Minivan 2012",
)


def write_cars_annotations(path, names, labels) -> None:
    """A Stanford Cars annotation file: ``annotations``, a 1 x N struct array."""
    from scipy.io import savemat

    fields = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")
    records = np.zeros((1, len(names)), dtype=[(field, object) for field in fields])
    for i, (name, label) in enumerate(zip(names, labels, strict=True)):
        records[0, i] = (np.uint8(1), np.uint8(1), np.uint8(7), np.uint8(7), np.uint8(label), name)
    savemat(path, {"annotations": records})


def write_cars(root, *, classes=CARS_CLASSES, per_class=8, test=3, seed=0):
    """``stanford_cars/cars_{train,test}/<nnnnn>.jpg``, ``devkit/cars_meta.mat``
    (``class_names``), ``devkit/cars_train_annos.mat`` and ``cars_test_annos_withlabels.mat``
    (``annotations``: a struct array with the bounding box, ``class`` from 1 and ``fname``)."""
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    base = root / "stanford_cars"
    (base / "devkit").mkdir(parents=True)
    names = np.empty((1, len(classes)), dtype=object)
    names[0, :] = classes
    savemat(base / "devkit" / "cars_meta.mat", {"class_names": names})
    split_files = {"train": ([], []), "test": ([], [])}
    for n in range(per_class):
        for label in range(1, len(classes) + 1):
            split = "test" if n < test else "train"
            files, labels = split_files[split]
            files.append(f"{len(files) + 1:05d}.jpg")
            labels.append(label)
            _jpeg(rng, base / f"cars_{split}" / files[-1])
    write_cars_annotations(base / "devkit" / "cars_train_annos.mat", *split_files["train"])
    write_cars_annotations(base / "cars_test_annos_withlabels.mat", *split_files["test"])
    return root


SUN397_CLASSES = ("abbey", "apartment_building/outdoor", "bakery/shop", "beach")


def write_sun397(root, *, classes=SUN397_CLASSES, per_class=9, partition=False, seed=0):
    """``SUN397/<letter>/<class>/sun_<id>.jpg`` and ``ClassName.txt`` (``/a/abbey``); with
    ``partition``, ``Training_01.txt`` and ``Testing_01.txt`` (``/a/abbey/sun_<id>.jpg``, four
    and three images of every class, the rest in neither)."""
    rng = np.random.default_rng(seed)
    base = root / "SUN397"
    lists = {"Training_01.txt": [], "Testing_01.txt": []}
    for name in classes:
        for n in range(per_class):
            letters = "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), 16))
            line = f"/{name[0]}/{name}/sun_{letters}.jpg"
            _jpeg(rng, base / line[1:])
            if n < 7:
                lists["Training_01.txt" if n < 4 else "Testing_01.txt"].append(line)
    _lines(base / "ClassName.txt", [f"/{name[0]}/{name}" for name in classes])
    if partition:
        for file, lines in lists.items():
            _lines(base / file, lines)
    return root


FGVC_VARIANTS = ("707-320", "A300B4", "Cessna 172", "F-16A/B")


def write_fgvc_aircraft(root, *, variants=FGVC_VARIANTS, per_class=9, seed=0):
    """``fgvc-aircraft-2013b/data/images/<7 digits>.jpg``, ``data/variants.txt`` and
    ``data/images_variant_{train,val,trainval,test}.txt`` (``<id> <variant>``, variants with
    spaces and slashes; a third of every class each)."""
    rng = np.random.default_rng(seed)
    data = root / "fgvc-aircraft-2013b" / "data"
    lists = {"train": [], "val": [], "test": []}
    for label, variant in enumerate(variants):
        for n in range(per_class):
            image_id = f"{1_000_000 + 97 * (label * per_class + n):07d}"
            _jpeg(rng, data / "images" / f"{image_id}.jpg")
            lists[("train", "val", "test")[n % 3]].append(f"{image_id} {variant}")
    lists["trainval"] = lists["train"] + lists["val"]
    _lines(data / "variants.txt", variants)
    for split, lines in lists.items():
        _lines(data / f"images_variant_{split}.txt", lines)
    return root
