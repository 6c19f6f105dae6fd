"""The on-disk layouts of the zero-shot suite's file-based datasets, indexed without torchvision.

Each dataset is read exactly as torchvision 0.29 writes it with ``download=True`` (``root`` is
the folder holding the dataset's folder, torchvision's ``root``), so a copy fetched that way is
read as it is; the annotation files are parsed in :mod:`trainables.data.suite_annotations`.

===============  =================================  ============================================
dataset          classes, in label order            official splits
===============  =================================  ============================================
food101          sorted keys of meta/train.json     train.json, test.json
pets             breeds named from image ids        annotations/trainval.txt, test.txt
                 (title case), by class id
flowers          clip_benchmark's 102 names         setid.mat: trnid, valid, tstid
dtd              sorted folders of images/          labels/{train,val,test}1.txt (partition 1)
eurosat          sorted class folders               none
fgvc_aircraft    data/variants.txt, in file order   images_variant_{train,val,test}.txt
caltech101       sorted class folders, including    none
                 BACKGROUND_Google (102)
caltech256       sorted class folders (257)         none
cars             devkit/cars_meta.mat class_names   cars_train_annos.mat, ..._withlabels.mat
sun397           ClassName.txt, as torchvision      Training_01.txt, Testing_01.txt when they
                 names them ("abbey",               are in SUN397/ (torchvision does not fetch
                 "apartment_building/outdoor")      them), else none
===============  =================================  ============================================

Splits ("val" is never the test set, so that selection never reads it):

* ``test``: the official test list; for a dataset without official split, the last
  :data:`TEST_PERCENT` % of every class (files sorted by name; rounded half up, at least one).
  These test sets are this tool's own: compare their numbers only with runs of this tool;
* ``val``: the official validation list (flowers, dtd, fgvc_aircraft); otherwise
  :data:`~trainables.data.image_files.HELD_OUT_PER_CLASS` images of every class (the last ones
  by file name, at most half of a class) held out of the official training list (or of what the
  test cut leaves), as image folders do;
* ``train``: the official training list, less the held-out ``val``.

Each split is listed in one fixed shuffled order (:func:`.image_files.fixed_order`), so that
its first ``N`` images sample every class. A missing or incomplete copy raises one line that
says what is missing and how to fetch the dataset (this code never downloads); a malformed
annotation line, one line naming the file and the line.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from trainables.data import suite_annotations as annotations
from trainables.data.benchmark_prompts import benchmark_classnames
from trainables.data.image_files import HELD_OUT_PER_CLASS, IMAGE_SUFFIXES, FileIndex, fixed_order
from trainables.data.splits import check_split
from trainables.data.suite_annotations import Listed, MissingFiles
from trainables.errors import UserInputError, must

#: The share of every class (in percent) that is the test split of a dataset without one.
TEST_PERCENT = 20
_OWN_TEST = f"test: the last {TEST_PERCENT}% of every class"


@dataclass(frozen=True)
class Layout:
    """Where one dataset's files are (``folder`` under ``root``) and which torchvision class
    fetches them; ``description`` sums up the files read."""

    name: str
    folder: str
    torchvision_class: str
    description: str


LAYOUTS: dict[str, Layout] = {
    layout.name: layout
    for layout in (
        Layout(
            "food101",
            "food-101",
            "Food101",
            "Food-101 (food-101/images/<class>/<id>.jpg, meta/{train,test}.json)",
        ),
        Layout(
            "pets",
            "oxford-iiit-pet",
            "OxfordIIITPet",
            "Oxford-IIIT Pet (oxford-iiit-pet/images/<id>.jpg, annotations/{trainval,test}.txt)",
        ),
        Layout(
            "flowers",
            "flowers-102",
            "Flowers102",
            "Flowers-102 (flowers-102/jpg/image_<id>.jpg, imagelabels.mat, setid.mat)",
        ),
        Layout(
            "dtd",
            "dtd/dtd",
            "DTD",
            "DTD (dtd/dtd/images/<class>/<image>, labels/{train,val,test}1.txt)",
        ),
        Layout(
            "eurosat",
            "eurosat/2750",
            "EuroSAT",
            f"EuroSAT RGB (eurosat/2750/<class>/<image>; {_OWN_TEST})",
        ),
        Layout(
            "fgvc_aircraft",
            "fgvc-aircraft-2013b",
            "FGVCAircraft",
            "FGVC-Aircraft variants (fgvc-aircraft-2013b/data/images/<id>.jpg, variants.txt, "
            "images_variant_{train,val,test}.txt)",
        ),
        Layout(
            "caltech101",
            "caltech101/101_ObjectCategories",
            "Caltech101",
            "Caltech-101 (caltech101/101_ObjectCategories/<class>/<image>, BACKGROUND_Google "
            f"a class; {_OWN_TEST})",
        ),
        Layout(
            "caltech256",
            "caltech256/256_ObjectCategories",
            "Caltech256",
            f"Caltech-256 (caltech256/256_ObjectCategories/<class>/<image>; {_OWN_TEST})",
        ),
        Layout(
            "cars",
            "stanford_cars",
            "StanfordCars",
            "Stanford Cars (stanford_cars/cars_{train,test}/, devkit/cars_meta.mat, "
            "devkit/cars_train_annos.mat, cars_test_annos_withlabels.mat)",
        ),
        Layout(
            "sun397",
            "SUN397",
            "SUN397",
            "SUN397 (SUN397/<letter>/<class>/sun_<id>.jpg, ClassName.txt; Training_01.txt and "
            f"Testing_01.txt when present, else {_OWN_TEST})",
        ),
    )
}

#: How to fetch a dataset torchvision can no longer download (0.29's StanfordCars raises: the
#: original URL is gone).
_BY_HAND = {
    "cars": (
        "torchvision cannot download Stanford Cars any more (its URL is gone): copy it from a "
        "mirror into '{root}/stanford_cars/' as torchvision reads it (cars_train/, cars_test/, "
        "devkit/cars_meta.mat, devkit/cars_train_annos.mat, cars_test_annos_withlabels.mat)"
    ),
}


# -- the datasets that are class folders --------------------------------------------------------


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def _class_images(folder: Path, accept: Callable[[str], bool] = _is_image) -> list[str]:
    """The images directly in a class folder, sorted by name (subfolders are not read:
    Caltech-256's ``056.dog/greg/`` holds copies, which torchvision skips too)."""
    try:
        with os.scandir(annotations.required(folder, folder=True)) as entries:
            images = sorted(e.path for e in entries if accept(e.name) and e.is_file())
    except OSError as error:
        raise UserInputError(f"{folder}: the folder cannot be read ({error.strerror}).") from None
    if not images:
        raise MissingFiles(f"the class folder '{folder}/' holds no image")
    return images


def _folder_images(base: Path, classes: tuple[str, ...]) -> list[list[str]]:
    return [_class_images(base / name) for name in classes]


def _sun397_classes(base: Path) -> tuple[str, ...]:
    return tuple(annotations.sun397_class_folders(base))


def _sun397_images(base: Path, classes: tuple[str, ...]) -> list[list[str]]:
    folders = annotations.sun397_class_folders(base)
    return [_class_images(folders[name], annotations.is_sun397_image) for name in classes]


def _flowers_classes(base: Path) -> tuple[str, ...]:
    # torchvision's 102 classes in its order, three names cleaned by clip_benchmark ("ball
    # moss" is "air plant"); the files hold only 1-based labels.
    return benchmark_classnames("flowers")


@dataclass(frozen=True)
class _Reader:
    classes: Callable[[Path], tuple[str, ...]]
    #: The official list of "train", "test" (and "val" where ``has_val``) of the copy in a
    #: folder, or None where it has no official split.
    official: Callable[[Path, tuple[str, ...], str], Listed | None] | None = None
    has_val: bool = False
    #: Every image of each class, sorted by name (a dataset without official split).
    per_class: Callable[[Path, tuple[str, ...]], list[list[str]]] | None = None


_READERS: dict[str, _Reader] = {
    "food101": _Reader(annotations.food101_classes, annotations.food101_list),
    "pets": _Reader(annotations.pets_classes, annotations.pets_list),
    "flowers": _Reader(_flowers_classes, annotations.flowers_list, has_val=True),
    "dtd": _Reader(annotations.dtd_classes, annotations.dtd_list, has_val=True),
    "eurosat": _Reader(annotations.sorted_folders, per_class=_folder_images),
    "fgvc_aircraft": _Reader(annotations.fgvc_classes, annotations.fgvc_list, has_val=True),
    "caltech101": _Reader(annotations.sorted_folders, per_class=_folder_images),
    "caltech256": _Reader(annotations.sorted_folders, per_class=_folder_images),
    "cars": _Reader(annotations.cars_classes, annotations.cars_list),
    "sun397": _Reader(_sun397_classes, annotations.sun397_list, per_class=_sun397_images),
}


# -- splits -------------------------------------------------------------------------------------


def _by_class(listed: Listed, count: int) -> list[list[str]]:
    """The files of ``listed`` per label, sorted by name."""
    groups: list[list[str]] = [[] for _ in range(count)]
    for file, label in zip(*listed, strict=True):
        groups[label].append(file)
    return [sorted(group) for group in groups]


def _test_size(images: int) -> int:
    """How many of a class's ``images`` are its test split where the dataset has none:
    :data:`TEST_PERCENT` % rounded half up, at least one."""
    return max(1, (images * TEST_PERCENT + 50) // 100)


def _held_out(groups: list[list[str]], split: str) -> list[list[str]]:
    """``split`` ("train" or "val") of a training list given per class: the last
    :data:`HELD_OUT_PER_CLASS` images of every class (at most half of it) are "val"."""
    cuts = [len(group) - min(HELD_OUT_PER_CLASS, len(group) // 2) for group in groups]
    if split == "val":
        return [group[cut:] for group, cut in zip(groups, cuts, strict=True)]
    return [group[:cut] for group, cut in zip(groups, cuts, strict=True)]


def _split_groups(
    reader: _Reader, base: Path, classes: tuple[str, ...], split: str
) -> list[list[str]]:
    """The files of ``split`` per class."""
    held_out = split != "test" and not reader.has_val  # "val" comes out of the training list
    read = "train" if held_out else split
    listed = reader.official(base, classes, read) if reader.official else None
    if listed is not None:
        groups = _by_class(listed, len(classes))
        return _held_out(groups, split) if held_out else groups
    everything = reader.per_class(base, classes)
    if split == "test":
        return [group[len(group) - _test_size(len(group)) :] for group in everything]
    return _held_out([group[: len(group) - _test_size(len(group))] for group in everything], split)


# -- the public interface -----------------------------------------------------------------------


def _layout(name: str) -> Layout:
    if name not in LAYOUTS:
        raise must("dataset", f"one of {', '.join(map(repr, LAYOUTS))}", name)
    return LAYOUTS[name]


def _missing(layout: Layout, root: Path, what: str) -> UserInputError:
    top = layout.folder.split("/")[0]
    if layout.name in _BY_HAND:
        fetch = _BY_HAND[layout.name].format(root=root)
    else:
        command = (
            f'python -c "import torchvision; torchvision.datasets.{layout.torchvision_class}'
            f"('{root}', download=True)\""
        )
        fetch = f"on a machine with internet run {command} and copy {top}/ into '{root}'"
    return UserInputError(
        f"`root` must be a folder holding {layout.name} ({layout.folder}/ as torchvision writes "
        f"it), but {what}. This tool never downloads: {fetch}."
    )


@contextlib.contextmanager
def _reading(layout: Layout, root: Path):
    """Turn a missing part of the copy into the one line that says how to fetch it."""
    try:
        yield
    except MissingFiles as error:
        raise _missing(layout, root, str(error)) from None


def _base(layout: Layout, root: Path) -> Path:
    return annotations.required(root / layout.folder, folder=True)


def layout_classes(name: str, root: str | Path) -> tuple[str, ...]:
    """The class ids of dataset ``name`` in label order; ``root`` is the folder holding the
    dataset's folder (torchvision's ``root``)."""
    layout, root = _layout(name), Path(root).expanduser()
    with _reading(layout, root):
        return _READERS[name].classes(_base(layout, root))


def layout_index(name: str, root: str | Path, split: str) -> FileIndex:
    """The files and labels of ``split`` ("train", "val" or "test") of dataset ``name`` under
    ``root``, in one fixed shuffled order; labels index :func:`layout_classes`."""
    layout, root = _layout(name), Path(root).expanduser()
    check_split(split)
    reader = _READERS[name]
    with _reading(layout, root):
        base = _base(layout, root)
        classes = reader.classes(base)
        groups = _split_groups(reader, base, classes, split)
        if not any(groups):
            raise MissingFiles(f"its {split} split holds no image")
    chosen = [file for group in groups for file in group]
    labels = [label for label, group in enumerate(groups) for _ in group]
    return fixed_order(chosen, labels, classes)
