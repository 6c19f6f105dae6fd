"""The zero-shot suite's file layouts, written here in their real on-disk form: classes, split
sizes and rules, labels, the fixed order, parity with torchvision's own readers of the same
files, and one line for every missing or malformed part."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

from tests import image_datasets as write
from trainables.data.benchmark_prompts import benchmark_classnames
from trainables.data.image_files import HELD_OUT_PER_CLASS, fixed_order
from trainables.data.suite_layouts import LAYOUTS, layout_classes, layout_index
from trainables.errors import UserInputError

SPLITS = ("train", "val", "test")

WRITERS = {
    "food101": write.write_food101,
    "pets": write.write_pets,
    "flowers": write.write_flowers,
    "dtd": write.write_dtd,
    "eurosat": write.write_eurosat,
    "fgvc_aircraft": write.write_fgvc_aircraft,
    "caltech101": write.write_caltech101,
    "caltech256": write.write_caltech256,
    "cars": write.write_cars,
    "sun397": write.write_sun397,
}

#: Classes in label order, and split sizes, of the copies the writers make by default.
EXPECTED = {
    "food101": (("apple_pie", "baby_back_ribs", "churros"), (9, 6, 9)),
    "pets": (("Abyssinian", "American Bulldog", "Bengal", "English Cocker Spaniel"), (12, 8, 12)),
    "flowers": (benchmark_classnames("flowers"), (12, 8, 16)),
    "dtd": (("banded", "blotchy", "zigzagged"), (9, 9, 9)),
    # 12 per class: 2 test (20%), 5 val (half of the 10 left), 5 train.
    "eurosat": (("AnnualCrop", "Forest", "River"), (15, 15, 6)),
    "fgvc_aircraft": (write.FGVC_VARIANTS, (12, 12, 12)),
    # 6, 11, 5, 1 images: 1, 2, 1, 1 test; the rest 5, 9, 4, 0 halved into val and train.
    "caltech101": (write.CALTECH101_CLASSES, (10, 8, 5)),
    # 7, 3, 10 images (the copies in greg/ not counted): 1, 1, 2 test.
    "caltech256": (write.CALTECH256_CLASSES, (8, 8, 4)),
    "cars": (write.CARS_CLASSES, (9, 6, 9)),
    "sun397": (write.SUN397_CLASSES, (16, 12, 8)),
}


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> Path:
    """One root holding every dataset side by side, as torchvision's downloads leave them."""
    root = tmp_path_factory.mktemp("suite")
    for writer in WRITERS.values():
        writer(root)
    return root


def _splits(name: str, root: Path) -> dict:
    return {split: layout_index(name, root, split) for split in SPLITS}


def _images_on_disk(name: str, root: Path) -> set[str]:
    base = root / LAYOUTS[name].folder
    return {str(path) for path in base.rglob("*.jpg") if path.parent.name != "greg"}


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_classes_and_split_sizes(suite, name):
    classes, sizes = EXPECTED[name]
    assert layout_classes(name, suite) == classes
    splits = _splits(name, suite)
    assert tuple(len(splits[split]) for split in SPLITS) == sizes
    assert all(index.classes == classes for index in splits.values())


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_the_splits_are_disjoint_and_cover_every_image(suite, name):
    files = [set(index.files) for index in _splits(name, suite).values()]
    assert sum(len(part) for part in files) == len(set.union(*files))
    assert set.union(*files) == _images_on_disk(name, suite)


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_the_order_is_fixed_and_mixes_classes(suite, name):
    index = layout_index(name, suite, "train")
    assert layout_index(name, suite, "train") == index
    assert len(set(index.labels[:6])) > 1
    # The order does not depend on the order of the annotation files: one shuffle of the
    # class-major list.
    pairs = sorted(zip(index.labels, index.files, strict=True))
    expected = fixed_order([f for _, f in pairs], [label for label, _ in pairs], index.classes)
    assert expected == index


@pytest.mark.parametrize(
    "name", ["food101", "dtd", "eurosat", "caltech101", "caltech256", "sun397", "pets"]
)
def test_labels_match_the_class_each_file_is_filed_under(suite, name):
    for index in _splits(name, suite).values():
        for file, label in zip(index.files, index.labels, strict=True):
            relative = Path(file).relative_to(suite / LAYOUTS[name].folder).as_posix()
            if name == "pets":
                assert index.classes[label].lower().replace(" ", "_") in relative.lower()
            else:
                assert f"/{index.classes[label]}/" in f"/{relative}"


def _of_class(index, label: int) -> list[str]:
    return sorted(f for f, y in zip(index.files, index.labels, strict=True) if y == label)


def test_held_out_val_is_the_last_images_of_each_class_at_most_half(suite):
    splits = _splits("food101", suite)  # five training images per class: two held out
    for label in range(3):
        val, train = _of_class(splits["val"], label), _of_class(splits["train"], label)
        assert len(val) == 2 == min(HELD_OUT_PER_CLASS, 5 // 2)
        assert max(train) < min(val)


def test_a_dataset_without_split_tests_on_the_last_fifth_of_every_class(suite):
    splits = _splits("eurosat", suite)
    for label, name in enumerate(splits["test"].classes):
        everything = sorted(str(p) for p in (suite / "eurosat" / "2750" / name).iterdir())
        # 12 images: 20% is 2.4, rounded to 2; sorted by name, "River_9" after "River_12".
        assert _of_class(splits["test"], label) == everything[-2:]


def test_sun397_uses_partition_1_when_its_files_are_there(tmp_path):
    root = write.write_sun397(tmp_path, partition=True)
    base = root / "SUN397"
    splits = _splits("sun397", root)

    def listed(file):
        return {str(base / line[1:]) for line in (base / file).read_text().split()}

    assert set(splits["train"].files) | set(splits["val"].files) == listed("Training_01.txt")
    assert set(splits["test"].files) == listed("Testing_01.txt")
    assert [len(splits[split]) for split in SPLITS] == [8, 8, 12]  # 4 per class: 2 held out
    (base / "Testing_01.txt").unlink()
    with pytest.raises(UserInputError, match=r"Testing_01\.txt' is missing"):
        layout_index("sun397", root, "test")


# -- parity with torchvision's readers of the same files ------------------------------------------


def _pairs(index, root: Path) -> set[tuple[str, str]]:
    return {
        (os.path.relpath(file, root), index.classes[label])
        for file, label in zip(index.files, index.labels, strict=True)
    }


def _torchvision_pairs(name: str, root: Path, split: str | None) -> set[tuple[str, str]]:
    """``(file under root, class name)`` of torchvision's dataset ``name`` (``split``: its own
    split name, None for the datasets without one)."""
    import torchvision.datasets as tv

    if name == "caltech101":  # file names rebuilt from a count, BACKGROUND_Google dropped
        data = tv.Caltech101(str(root))
        return {
            (
                f"caltech101/101_ObjectCategories/{data.categories[y]}/image_{i:04d}.jpg",
                data.categories[y],
            )
            for i, y in zip(data.index, data.y, strict=True)
        }
    if name == "caltech256":
        data = tv.Caltech256(str(root))
        folder = "caltech256/256_ObjectCategories"
        return {
            (f"{folder}/{data.categories[y]}/{y + 1:03d}_{i:04d}.jpg", data.categories[y])
            for i, y in zip(data.index, data.y, strict=True)
        }
    if name == "eurosat":
        data = tv.EuroSAT(str(root))
        samples = data.samples
    elif name == "cars":
        data = tv.StanfordCars(str(root), split=split)
        samples = data._samples
    elif name == "sun397":
        data = tv.SUN397(str(root))
        samples = zip(data._image_files, data._labels, strict=True)
    elif name == "pets":
        data = tv.OxfordIIITPet(str(root), split=split)
        samples = zip(data._images, data._labels, strict=True)
    else:
        make = {"food101": tv.Food101, "dtd": tv.DTD, "fgvc_aircraft": tv.FGVCAircraft}
        data = make[name](str(root), split=split)
        samples = zip(data._image_files, data._labels, strict=True)
    return {(os.path.relpath(file, root), data.classes[label]) for file, label in samples}


#: Our splits, each compared with the union of torchvision's (None: a dataset without split).
PARITY = {
    "food101": {"train": ("train", "val"), "test": ("test",)},
    "pets": {"trainval": ("train", "val"), "test": ("test",)},
    "dtd": {"train": ("train",), "val": ("val",), "test": ("test",)},
    "fgvc_aircraft": {"train": ("train",), "val": ("val",), "test": ("test",)},
    "cars": {"train": ("train", "val"), "test": ("test",)},
    "eurosat": {None: SPLITS},
    "caltech101": {None: SPLITS},
    "caltech256": {None: SPLITS},
    "sun397": {None: SPLITS},
}


@pytest.mark.parametrize("name", list(PARITY))
def test_parity_with_torchvision(suite, name):
    splits = _splits(name, suite)
    for theirs, ours in PARITY[name].items():
        got = set().union(*(_pairs(splits[split], suite) for split in ours))
        if name == "caltech101":  # torchvision drops BACKGROUND_Google; here it is a class
            got = {pair for pair in got if pair[1] != "BACKGROUND_Google"}
        assert got == _torchvision_pairs(name, suite, theirs)


def test_parity_with_torchvision_for_flowers(suite, monkeypatch):
    # torchvision checks the md5 of the real .mat files, which a tiny copy cannot match: only
    # that check is skipped; the files are read by its own code.
    import torchvision.datasets as tv

    monkeypatch.setattr("torchvision.datasets.flowers102.check_integrity", lambda *_: True)
    classes = layout_classes("flowers", suite)
    # The same 102 classes in the same order; clip_benchmark cleans three of torchvision's names.
    renamed = {
        i: pair
        for i, pair in enumerate(zip(tv.Flowers102.classes, classes, strict=True))
        if pair[0] != pair[1]
    }
    assert renamed == {
        15: ("globe-flower", "globe flower"),
        59: ("pink-yellow dahlia?", "pink and yellow dahlia"),
        92: ("ball moss", "air plant"),
    }
    for split in SPLITS:
        data = tv.Flowers102(str(suite), split=split)
        theirs = {
            (os.path.relpath(file, suite), classes[label])
            for file, label in zip(data._image_files, data._labels, strict=True)
        }
        assert _pairs(layout_index("flowers", suite, split), suite) == theirs


# -- one line for every missing or malformed part -------------------------------------------------


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_a_missing_dataset_names_its_folder_and_how_to_fetch_it(tmp_path, name):
    layout = LAYOUTS[name]
    for call in (
        lambda: layout_classes(name, tmp_path),
        lambda: layout_index(name, tmp_path, "test"),
    ):
        with pytest.raises(UserInputError) as error:
            call()
        message = str(error.value)
        assert "\n" not in message and f"{tmp_path}/{layout.folder}/' is missing" in message
        if name == "cars":  # torchvision 0.29's StanfordCars(download=True) raises
            assert "cannot download" in message and "cars_test_annos_withlabels.mat" in message
        else:
            assert (
                f"torchvision.datasets.{layout.torchvision_class}('{tmp_path}', download=True)"
                in message
            )


@pytest.mark.parametrize(
    ("name", "file", "line", "expected"),
    [
        (
            "pets",
            "oxford-iiit-pet/annotations/test.txt",
            "Bengal_9 one 1 3",
            "<image id> <class id>",
        ),
        ("dtd", "dtd/dtd/labels/val1.txt", "banded_0001.jpg", "<class>/<image file>"),
        (
            "fgvc_aircraft",
            "fgvc-aircraft-2013b/data/images_variant_test.txt",
            "1234567",
            "<image id> <variant>",
        ),
        ("sun397", "SUN397/ClassName.txt", "abbey", "/<letter>/<class>"),
    ],
)
def test_a_malformed_line_names_its_file_and_number(tmp_path, name, file, line, expected):
    root = WRITERS[name](tmp_path)
    path = root / file
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines[:2], line, *lines[2:]]) + "\n")
    split = "val" if "val" in file else "test"
    pattern = rf"^{re.escape(str(path))}: line 3 must be `{re.escape(expected)}"
    with pytest.raises(UserInputError, match=pattern) as error:
        layout_index(name, root, split)
    assert "\n" not in str(error.value)


def test_a_class_outside_the_class_list_is_one_line(tmp_path):
    root = write.write_dtd(tmp_path)
    path = root / "dtd" / "dtd" / "labels" / "test1.txt"
    path.write_text(path.read_text() + "bubbly/bubbly_0001.jpg\n")
    with pytest.raises(
        UserInputError,
        match=rf"{re.escape(str(path))}: line 10 names the class 'bubbly', which is not "
        r"one of the 3 classes of images/",
    ):
        layout_index("dtd", root, "test")
    fgvc = write.write_fgvc_aircraft(tmp_path / "fgvc")
    path = fgvc / "fgvc-aircraft-2013b" / "data" / "images_variant_val.txt"
    path.write_text(path.read_text() + "1000000 Boeing 747\n")
    with pytest.raises(UserInputError, match=r"names the class 'Boeing 747'"):
        layout_index("fgvc_aircraft", fgvc, "val")


def test_a_listed_image_that_is_not_on_disk_is_one_line(tmp_path):
    root = write.write_food101(tmp_path)
    index = layout_index("food101", root, "test")
    Path(index.files[0]).unlink()
    with pytest.raises(
        UserInputError, match=r"1 image\(s\) listed in '.*meta/test\.json' are missing"
    ) as error:
        layout_index("food101", root, "test")
    assert index.files[0] in str(error.value) and "download=True" in str(error.value)
    layout_index("food101", root, "train")  # the other lists are still read


def test_broken_matlab_files_are_one_line(tmp_path):
    from scipy.io import savemat

    root = write.write_flowers(tmp_path)
    (root / "flowers-102" / "setid.mat").write_bytes(b"not a MATLAB file")
    with pytest.raises(UserInputError, match=r"setid\.mat: not a readable MATLAB file"):
        layout_index("flowers", root, "train")
    cars = write.write_cars(tmp_path / "cars")
    path = cars / "stanford_cars" / "devkit" / "cars_train_annos.mat"
    write.write_cars_annotations(path, ["00001.jpg", "00002.jpg"], [1, 0])
    with pytest.raises(
        UserInputError, match=r"annotation 2 must have a file name \(fname\) and a class id from 1"
    ):
        layout_index("cars", cars, "train")
    write.write_cars_annotations(path, ["00001.jpg"], [4])
    with pytest.raises(UserInputError, match=r"class id 4, but devkit/cars_meta\.mat names 3"):
        layout_index("cars", cars, "train")
    savemat(cars / "stanford_cars" / "devkit" / "cars_meta.mat", {"names": np.arange(3)})
    with pytest.raises(
        UserInputError, match=r"cars_meta\.mat: the MATLAB file must hold `class_names`"
    ):
        layout_classes("cars", cars)


def test_an_empty_class_folder_and_a_missing_annotation_file_are_one_line(tmp_path):
    root = write.write_eurosat(tmp_path)
    (root / "eurosat" / "2750" / "Pasture").mkdir()
    with pytest.raises(UserInputError, match=r"the class folder '.*2750/Pasture/' holds no image"):
        layout_index("eurosat", root, "train")
    pets = write.write_pets(tmp_path / "pets")
    (pets / "oxford-iiit-pet" / "annotations" / "trainval.txt").unlink()
    with pytest.raises(
        UserInputError, match=r"annotations/trainval\.txt' is missing\. .*OxfordIIITPet"
    ):
        layout_classes("pets", pets)


def test_a_pets_line_must_agree_with_its_breeds_class_id(tmp_path):
    root = write.write_pets(tmp_path)
    path = root / "oxford-iiit-pet" / "annotations" / "test.txt"
    path.write_text(path.read_text() + "Bengal_1 1 1 1\n")
    with pytest.raises(
        UserInputError, match=r"line 13 must give 'Bengal_1' the class id of its breed"
    ):
        layout_index("pets", root, "test")


def test_unknown_names_and_splits_are_refused(suite):
    with pytest.raises(UserInputError, match=r"`dataset` must be one of 'food101'"):
        layout_classes("food-101", suite)
    with pytest.raises(UserInputError, match=r"`split` must be one of"):
        layout_index("food101", suite, "trainval")


def test_a_big_list_indexes_in_seconds(tmp_path):
    # Images are checked by listing their folder once, not one stat per listed file.
    import time

    root = write.write_fgvc_aircraft(tmp_path, per_class=3)
    data = root / "fgvc-aircraft-2013b" / "data"
    lines = [f"{2_000_000 + i:07d} {write.FGVC_VARIANTS[i % 4]}" for i in range(20_000)]
    for line in lines:  # empty files: only their names are read
        os.close(os.open(data / "images" / f"{line.split()[0]}.jpg", os.O_CREAT | os.O_WRONLY))
    (data / "images_variant_train.txt").write_text("\n".join(lines) + "\n")
    start = time.perf_counter()
    assert len(layout_index("fgvc_aircraft", root, "train")) == 20_000
    assert time.perf_counter() - start < 2
