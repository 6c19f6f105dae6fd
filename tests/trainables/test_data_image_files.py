"""Datasets read from image files: the ImageNet and TinyImageNet layouts written here in their
real on-disk form, the splits, the transforms (parity with torchvision's), deterministic
augmentation, and one line for every broken folder."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from tests.image_datasets import CLASSES, image, write_image_folder, write_tiny_imagenet
from trainables.data.image_files import (
    HELD_OUT_PER_CLASS,
    ImageFiles,
    ResizedImages,
    decode_all,
    index_split,
    random_crop_box,
    transform_image,
)
from trainables.errors import UserInputError


@pytest.mark.parametrize("writer", [write_image_folder, write_tiny_imagenet])
def test_the_splits_are_disjoint_and_label_every_image_with_its_class(tmp_path, writer):
    root = writer(tmp_path / "data", train=24)
    splits = {split: index_split(root, split) for split in ("train", "val", "test")}
    assert splits["train"].classes == CLASSES
    files = [set(index.files) for index in splits.values()]
    assert not (files[0] & files[1]) and not (files[0] & files[2]) and not (files[1] & files[2])
    assert len(splits["val"]) == HELD_OUT_PER_CLASS * len(CLASSES)
    assert len(splits["train"]) == (24 - HELD_OUT_PER_CLASS) * len(CLASSES)
    assert len(splits["test"]) == 2 * len(CLASSES)
    for index in splits.values():
        for file, label in zip(index.files, index.labels, strict=True):
            assert CLASSES[label] in file  # every file is named after its class here
    # Shuffled once, classes mixed: the first images of a split are not all of one class.
    assert len(set(splits["train"].labels[:10])) > 1
    assert index_split(root, "train") == splits["train"]  # the same order every time


def test_a_small_class_keeps_half_its_images_for_training(tmp_path):
    root = write_image_folder(tmp_path / "data", train=4)
    assert len(index_split(root, "val")) == 2 * len(CLASSES)
    assert len(index_split(root, "train")) == 2 * len(CLASSES)


@pytest.mark.parametrize(("width", "height"), [(40, 30), (30, 50), (64, 64), (17, 90), (224, 224)])
def test_the_evaluation_transform_is_torchvisions_resize_and_centre_crop(width, height):
    from torchvision import transforms

    picture = image(np.random.default_rng(width * height), width, height)
    reference = transforms.Compose(
        [
            transforms.Resize(32, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(32),
            transforms.PILToTensor(),
        ]
    )(picture)
    got = transform_image(picture, 32)
    assert got.dtype == torch.uint8 and got.shape == (3, 32, 32)
    assert torch.equal(got, reference)


def test_random_crops_stay_inside_and_cover_the_documented_range():
    rng = np.random.default_rng(0)
    areas = []
    for _ in range(500):
        left, top, right, bottom = random_crop_box(120, 80, rng)
        assert 0 <= left < right <= 120 and 0 <= top < bottom <= 80
        areas.append((right - left) * (bottom - top) / (120 * 80))
    assert min(areas) < 0.2 and max(areas) > 0.8


def test_the_augmentation_is_a_function_of_seed_epoch_and_item(tmp_path):
    root = write_image_folder(tmp_path / "data", train=8)
    index = index_split(root, "train")
    dataset = ImageFiles(index, 32, train=True, seed=3)
    first = dataset[0][0]
    assert torch.equal(dataset[0][0], first)
    assert torch.equal(ImageFiles(index, 32, train=True, seed=3)[0][0], first)
    assert not torch.equal(ImageFiles(index, 32, train=True, seed=4)[0][0], first)
    dataset.set_epoch(1)
    assert not torch.equal(dataset[0][0], first)
    evaluation = ImageFiles(index, 32)
    assert torch.equal(evaluation[0][0], evaluation[0][0])


def test_batches_do_not_depend_on_the_number_of_loader_processes(tmp_path):
    root = write_image_folder(tmp_path / "data", train=8)
    dataset = ImageFiles(index_split(root, "train"), 32, train=True, seed=0)
    dataset.set_epoch(2)

    def batches(workers: int) -> list[torch.Tensor]:
        sampler = torch.utils.data.distributed.DistributedSampler(
            dataset, num_replicas=2, rank=1, shuffle=True, seed=0
        )
        sampler.set_epoch(2)
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=3, sampler=sampler, num_workers=workers
        )
        return [images for images, _ in loader]

    for one, two in zip(batches(0), batches(2), strict=True):
        assert torch.equal(one, two)


def test_two_ranks_read_disjoint_shards_that_cover_the_split(tmp_path):
    root = write_image_folder(tmp_path / "data", train=8)
    dataset = ImageFiles(index_split(root, "train"), 32)
    shards = []
    for rank in range(2):
        sampler = torch.utils.data.distributed.DistributedSampler(
            dataset, num_replicas=2, rank=rank, shuffle=True, seed=0, drop_last=True
        )
        shards.append(set(sampler))
    assert not shards[0] & shards[1]
    assert len(shards[0] | shards[1]) == len(dataset)


def test_images_held_in_memory_are_resized_on_access():
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    resized = ResizedImages(images, torch.arange(5), 64)
    batch, labels = decode_all(resized, range(5))
    assert batch.shape == (5, 3, 64, 64) and labels.tolist() == [0, 1, 2, 3, 4]
    # Bicubic upsampling keeps the mean colour of every image.
    assert torch.allclose(batch.float().mean(dim=(2, 3)), images.float().mean(dim=(2, 3)), atol=2)


def test_broken_folders_are_one_line_each(tmp_path):
    with pytest.raises(UserInputError, match=r"train/<class>/ is missing"):
        index_split(tmp_path, "train")
    root = write_image_folder(tmp_path / "data")
    (root / "val" / "n99999999").mkdir()
    with pytest.raises(UserInputError, match=r"`n99999999` of val/ is not one of train/'s 3"):
        index_split(root, "test")
    with pytest.raises(UserInputError, match=r"`split` must be one of"):
        index_split(root, "training")
    tiny = write_tiny_imagenet(tmp_path / "tiny")
    (tiny / "val" / "val_annotations.txt").write_text("just-a-file-name\n")
    with pytest.raises(UserInputError, match=r"line 1 must be `<image> TAB <class>`"):
        index_split(tiny, "test")


def test_a_damaged_image_names_its_file(tmp_path):
    root = write_image_folder(tmp_path / "data")
    index = index_split(root, "test")
    with open(index.files[0], "wb") as file:
        file.write(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(UserInputError, match=r"`data.root` must be a readable image"):
        ImageFiles(index, 32)[0]


def _resident_bytes() -> int:
    with open("/proc/self/statm") as file:
        return int(file.read().split()[1]) * 4096


def test_streaming_keeps_memory_flat_over_a_dataset_much_larger_than_a_batch(tmp_path):
    # 570 images decode to 570 x 3 x 224 x 224 bytes = 86 MB; one batch of 8 is 1.2 MB.
    root = write_image_folder(tmp_path / "data", train=200, test=1, size=(224, 224))
    dataset = ImageFiles(index_split(root, "train"), 224, train=True)
    decoded = len(dataset) * 3 * 224 * 224
    loader = torch.utils.data.DataLoader(dataset, batch_size=8, shuffle=True)
    iterator = iter(loader)
    next(iterator)  # warm up: the first batch allocates what every later one reuses
    before = _resident_bytes()
    seen = sum(len(images) for images, _ in iterator)
    grown = _resident_bytes() - before
    assert seen + 8 >= len(dataset) > 500
    assert grown < decoded / 10, f"resident memory grew {grown / 2**20:.1f} MiB"


def test_a_very_thin_image_is_transformed_without_resizing_it_whole():
    thin = image(np.random.default_rng(0), 1, 100_000)  # would resize to 224 x 22,400,000
    before = _resident_bytes()
    got = transform_image(thin, 224)
    assert got.shape == (3, 224, 224)
    assert _resident_bytes() - before < 200 * 2**20


def test_the_crop_only_path_matches_the_two_step_transform():
    # Just past the threshold: both ways are computable, and agree within a rounding step.
    from trainables.data import image_files

    picture = image(np.random.default_rng(1), 40, 700)
    whole = transform_image(picture, 32)
    threshold = image_files._MAX_RESIZED_AREA
    try:
        image_files._MAX_RESIZED_AREA = 1
        cropped = transform_image(picture, 32)
    finally:
        image_files._MAX_RESIZED_AREA = threshold
    assert (whole.int() - cropped.int()).abs().max() <= 2


def test_a_damaged_training_image_is_skipped_not_fatal(tmp_path, caplog):
    root = write_image_folder(tmp_path / "data", train=8)
    index = index_split(root, "train")
    with open(index.files[0], "wb") as file:
        file.write(b"not an image")
    dataset = ImageFiles(index, 32, train=True)
    with caplog.at_level("WARNING"):
        picture, label = dataset[0]
    assert picture.shape == (3, 32, 32) and label == index.labels[1]  # the next image's
    assert "skipping a training image" in caplog.text and index.files[0] in caplog.text
    assert torch.equal(dataset[torch.tensor(2)][0], dataset[2][0])  # tensor indices too


def test_sixteen_bit_grey_pngs_keep_their_contrast(tmp_path):
    from PIL import Image

    ramp = np.linspace(0, 65535, 64 * 64).astype(np.uint16).reshape(64, 64)
    path = tmp_path / "grey16.png"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I;16")
    from trainables.readers import open_image

    rgb = np.asarray(open_image(path.read_bytes(), str(path), field="image"))
    assert rgb.shape == (64, 64, 3)
    assert 110 < rgb.mean() < 145 and rgb.min() == 0 and rgb.max() == 255


def test_class_folders_of_both_layouts_mix(tmp_path):
    root = write_image_folder(tmp_path / "data", train=4)
    nested = root / "train" / CLASSES[1] / "images"
    nested.mkdir()
    for path in (root / "train" / CLASSES[1]).glob("*.JPEG"):
        path.rename(nested / path.name)
    index = index_split(root, "train")
    assert sorted(set(index.labels)) == [0, 1, 2]


def test_a_path_list_gives_back_every_path_and_costs_about_their_bytes():
    from trainables.data.image_files import PathList

    paths = [f"/data/imagenet/train/n{i % 1000:08d}/n{i:08d}_{i}.JPEG" for i in range(100_000)]
    paths += ["/data/été/снег.jpg", "/data/bad-\udcff-byte.jpg", ""]  # any name the disk has
    packed = PathList(paths)
    assert len(packed) == len(paths) and list(packed) == paths
    assert packed[-2] == paths[-2] and packed[5:8] == paths[5:8]
    with pytest.raises(IndexError):
        packed[len(paths)]
    text_bytes = sum(len(os.fsencode(path)) for path in paths)
    assert packed.nbytes <= text_bytes + 8 * len(paths)  # the bytes and one offset per path
