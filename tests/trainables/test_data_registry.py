"""The dataset registry over one root holding tiny copies of all 16 datasets of ``tecoa16``:
every dataset is found in its conventional folder, described, loaded for evaluation and
streamed for training, and its classes get the names prompts use."""

from __future__ import annotations

import pytest
import torch

from trainables.data.class_lists import dataset_classes, dataset_labels
from trainables.data.registry import STREAMED, describe_on_disk, load_split, training_set
from trainables.errors import UserInputError
from trainables.suites import TECOA16


@pytest.mark.parametrize("name", TECOA16)
def test_every_suite_dataset_is_described_and_loaded_from_one_root(suite_root, name):
    described = describe_on_disk(name, suite_root)
    classes = dataset_classes(name, suite_root)
    labels = dataset_labels(name, suite_root)
    assert described["classes"] == len(classes) == len(labels) >= 2
    assert all(described["splits"][split] > 0 for split in ("train", "val", "test"))
    test = load_split(name, "test", root=suite_root, image_size=32, samples=3)
    assert test.images.shape == (min(3, described["splits"]["test"]), 3, 32, 32)
    assert test.images.dtype == torch.uint8
    assert int(test.labels.max()) < len(classes)


@pytest.mark.parametrize("name", [name for name in TECOA16 if name in STREAMED])
def test_every_streamed_dataset_trains_with_the_augmentation(suite_root, name):
    dataset = training_set(name, root=suite_root, image_size=32, seed=1)
    first, label = dataset[0]
    assert first.shape == (3, 32, 32) and 0 <= int(label) < len(dataset_classes(name, suite_root))
    assert len(dataset.labels) == len(dataset)


def test_val_and_test_never_share_an_image(suite_root):
    for name in ("food101", "caltech256", "eurosat", "imagenet1k"):
        val = load_split(name, "val", root=suite_root, image_size=16)
        test = load_split(name, "test", root=suite_root, image_size=16)
        val_images = {bytes(image.numpy()) for image in val.images}
        assert not val_images & {bytes(image.numpy()) for image in test.images}, name


def test_prompt_names_are_clip_benchmarks_or_the_datasets_own_made_readable(suite_root):
    def name_of(dataset, class_id):
        classes = dataset_classes(dataset, suite_root)
        return dataset_labels(dataset, suite_root)[classes.index(class_id)]

    assert name_of("caltech101", "Faces") == "off-center face"
    assert name_of("caltech101", "BACKGROUND_Google") == "background"
    assert name_of("eurosat", "SeaLake") == "lake or sea"
    assert name_of("food101", "apple_pie") == "apple pie"
    assert name_of("sun397", "apartment_building/outdoor") == "apartment building outdoor"
    assert name_of("caltech256", "002.american-flag") == "american flag"
    assert name_of("pets", "American Pit Bull Terrier") == "American Pit Bull Terrier"
    assert dataset_labels("tinyimagenet", suite_root)[0] == "fish 0"
    assert dataset_labels("stl10") == dataset_classes("stl10")
    assert dataset_labels("pcam")[1] == "lymph node containing metastatic tumor tissue"


def test_an_image_folder_is_found_under_the_shared_root_or_as_its_own_root(suite_root):
    shared = describe_on_disk("imagenet1k", suite_root)
    own = describe_on_disk("imagenet1k", suite_root / "imagenet")
    assert shared["root"] == own["root"] == str(suite_root / "imagenet")
    assert shared["splits"] == own["splits"]


def test_a_copy_missing_classes_clip_benchmark_names_is_one_line(tmp_path):
    from tests.image_datasets import write_caltech101

    write_caltech101(tmp_path)  # 4 of Caltech-101's 102 folders
    with pytest.raises(UserInputError, match="must have the 102 classes .* list 4"):
        dataset_labels("caltech101", tmp_path)


def test_a_missing_dataset_names_its_folder(tmp_path):
    with pytest.raises(UserInputError, match="food-101"):
        describe_on_disk("food101", tmp_path)
    with pytest.raises(UserInputError, match="stl10_binary"):
        load_split("stl10", "test", root=tmp_path, image_size=32)
