"""Datasets read lazily from image files: an index of (file, label) pairs, decoded and transformed
only when an item is asked for, so a split never has to fit in memory.

Layouts (``root`` is the dataset's folder):

* **image folder** (ImageNet): ``train/<class>/<image>`` and ``val/<class>/<image>``;
* **TinyImageNet**: ``train/<class>/images/<image>``, and ``val/images/<image>`` labelled by
  ``val/val_annotations.txt`` (``<image> TAB <class> ...``).

Splits: ``test`` is the official validation set (the test labels of both are not public);
``train`` and ``val`` divide the official training set, :data:`HELD_OUT_PER_CLASS` images of
every class (the last ones by file name) held out as ``val``, so that selection never reads the
test images. Each split is listed in one fixed shuffled order, so that its first ``N`` images
(an evaluation cap) sample every class.

Images become uint8 ``[3, S, S]`` tensors (the model owns the normalisation, as for every
dataset): for evaluation resized so the shorter side is ``S`` (bicubic) and centre-cropped, as
open_clip's preprocess does; for training a random resized crop (scale 0.08-1, aspect 3/4-4/3)
and a horizontal flip, the augmentation of the baselines' ImageNet training. The random crop of
item ``i`` in epoch ``e`` is a function of ``(seed, e, i)`` alone, so an epoch's batches do not
depend on how many loader processes decode them.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from trainables.data.splits import SPLITS
from trainables.errors import UserInputError, must
from trainables.readers import MAX_IMAGE_BYTES, open_image, read_bytes, read_text

log = logging.getLogger(__name__)

#: Images of every class held out of the official training set as the ``val`` split.
HELD_OUT_PER_CLASS = 10
#: File suffixes read as images (compared in lower case).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
#: The scale and aspect-ratio ranges of the training crop (torchvision's RandomResizedCrop).
CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)


class PathList(Sequence[str]):
    """File paths packed into one byte array and their end offsets.

    ImageNet's 1.28 million paths as Python strings cost ~150 MB per process, and every forked
    DataLoader process copies the pages it touches (reading a string writes its reference
    count): packed, they cost their bytes (~80 MB), shared by all.
    """

    def __init__(self, paths: Sequence[str]):
        encoded = [os.fsencode(path) for path in paths]
        self._ends = np.cumsum([len(path) for path in encoded], dtype=np.int64)
        self._bytes = np.frombuffer(b"".join(encoded), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, item):
        if isinstance(item, slice):
            return [self[i] for i in range(*item.indices(len(self)))]
        item = range(len(self))[item]  # negative indices; IndexError past the end
        start = int(self._ends[item - 1]) if item else 0
        return os.fsdecode(self._bytes[start : int(self._ends[item])].tobytes())

    @property
    def nbytes(self) -> int:
        return self._bytes.nbytes + self._ends.nbytes


@dataclass(frozen=True, eq=False)
class FileIndex:
    """Every image of one split: its files and labels (indices into ``classes``)."""

    files: Sequence[str]  # a PathList
    labels: np.ndarray  # int64, one per file
    classes: tuple[str, ...]

    def __eq__(self, other) -> bool:
        return (
            isinstance(other, FileIndex)
            and self.classes == other.classes
            and np.array_equal(self.labels, other.labels)
            and list(self.files) == list(other.files)
        )

    def __len__(self) -> int:
        return len(self.files)


@functools.lru_cache(maxsize=64)
def _images_in(folder: Path) -> tuple[str, ...]:
    """The image files of ``folder``, sorted (listed once per process: every split of a large
    dataset and every loader reads the same listing)."""
    try:
        with os.scandir(folder) as entries:
            return tuple(
                sorted(
                    entry.path
                    for entry in entries
                    if os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES and entry.is_file()
                )
            )
    except OSError as error:
        raise UserInputError(
            f"{folder}: the folder cannot be read ({error.strerror or error})."
        ) from None


def _class_images(folder: Path) -> tuple[str, ...]:
    """A class folder's images: directly in it, or in its ``images/`` (TinyImageNet)."""
    nested = folder / "images"
    return _images_in(nested if nested.is_dir() else folder)


def _missing(root: Path, what: str) -> UserInputError:
    return UserInputError(
        f"`data.root` must be a folder holding an image-folder dataset ({what}), but got '{root}'."
    )


def _class_folders(root: Path) -> list[Path]:
    train = root / "train"
    if not train.is_dir():
        raise _missing(root, "train/<class>/ is missing")
    try:
        folders = sorted(child for child in train.iterdir() if child.is_dir())
    except OSError as error:
        raise UserInputError(f"{train}: the folder cannot be read ({error.strerror}).") from None
    if not folders:
        raise _missing(root, "train/ holds no class folder")
    return folders


def folder_classes(root: str | Path) -> tuple[str, ...]:
    """The class names of the image folder ``root``: its ``train/`` subfolders, sorted."""
    return tuple(folder.name for folder in _class_folders(Path(root).expanduser()))


def index_split(root: str | Path, split: str) -> FileIndex:
    """The files and labels of ``split`` ("train", "val" or "test") of the dataset in ``root``;
    classes are the training set's class folders in sorted order."""
    if split not in SPLITS:
        raise must("split", f"one of {', '.join(map(repr, SPLITS))}", split)
    root = Path(root).expanduser()
    folders = _class_folders(root)
    classes = tuple(folder.name for folder in folders)
    if split == "test":
        files, labels = _test_files(root, classes)
    else:
        files, labels = [], []
        for label, folder in enumerate(folders):
            images = _class_images(folder)
            cut = len(images) - min(HELD_OUT_PER_CLASS, len(images) // 2)
            chosen = images[cut:] if split == "val" else images[:cut]
            files.extend(chosen)
            labels.extend([label] * len(chosen))
    if not files:
        raise _missing(root, f"its {split} split holds no image ({', '.join(IMAGE_SUFFIXES)})")
    return fixed_order(files, labels, classes)


def fixed_order(files: Sequence[str], labels: Sequence[int], classes: tuple[str, ...]) -> FileIndex:
    """The split of ``files`` and their ``labels`` listed in one fixed shuffled order, classes
    mixed, so that the first ``N`` images of a split are a sample of all of it (the same order
    for the same input, in every process)."""
    order = np.random.default_rng(0).permutation(len(files))
    return FileIndex(
        PathList([files[i] for i in order]), np.asarray(labels, dtype=np.int64)[order], classes
    )


def _test_files(root: Path, classes: tuple[str, ...]) -> tuple[list[str], list[int]]:
    label_of = {name: label for label, name in enumerate(classes)}
    val = root / "val"
    if not val.is_dir():
        raise _missing(root, "val/ (the test split) is missing")
    files, labels = [], []
    annotations = val / "val_annotations.txt"
    if annotations.is_file():  # TinyImageNet: val/images/ and one line per image
        for number, line in enumerate(read_text(annotations).splitlines(), start=1):
            fields = line.split("\t")
            if len(fields) < 2 or fields[1] not in label_of or Path(fields[0]).name != fields[0]:
                raise UserInputError(
                    f"{annotations}: line {number} must be `<image> TAB <class>` with a file "
                    f"name and a class of train/, but got {line[:80]!r}."
                )
            files.append(str(val / "images" / fields[0]))
            labels.append(label_of[fields[1]])
        return files, labels
    for folder in sorted(child for child in val.iterdir() if child.is_dir()):
        if folder.name not in label_of:
            raise UserInputError(
                f"{folder}: the class folder `{folder.name}` of val/ is not one of train/'s "
                f"{len(classes)} classes."
            )
        images = _images_in(folder)
        files.extend(images)
        labels.extend([label_of[folder.name]] * len(images))
    return files, labels


# -- transforms ---------------------------------------------------------------------------------


def centre_crop_box(width: int, height: int, size: int) -> tuple[tuple[int, int], tuple]:
    """``(resized size, crop box in the resized image)`` of the evaluation transform: the
    shorter side resized to ``size``, the centre ``size x size`` kept (torchvision's Resize and
    CenterCrop arithmetic, which open_clip's preprocess uses)."""
    short, long = min(width, height), max(width, height)
    new_long = int(size * long / short)
    new_width, new_height = (size, new_long) if width <= height else (new_long, size)
    top = int(round((new_height - size) / 2.0))
    left = int(round((new_width - size) / 2.0))
    return (new_width, new_height), (left, top, left + size, top + size)


def random_crop_box(width: int, height: int, rng: np.random.Generator) -> tuple[float, ...]:
    """A crop of the training transform: an area fraction in :data:`CROP_SCALE` and an aspect
    ratio log-uniform in :data:`CROP_RATIO` (ten tries, then the centre crop of the nearest
    ratio, as torchvision's RandomResizedCrop)."""
    area = width * height
    log_ratio = (math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]))
    for _ in range(10):
        target = area * rng.uniform(*CROP_SCALE)
        ratio = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target * ratio))
        h = round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            left = int(rng.integers(0, width - w + 1))
            top = int(rng.integers(0, height - h + 1))
            return (left, top, left + w, top + h)
    ratio = width / height
    if ratio < CROP_RATIO[0]:
        w, h = width, round(width / CROP_RATIO[0])
    elif ratio > CROP_RATIO[1]:
        w, h = round(height * CROP_RATIO[1]), height
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return (left, top, left + w, top + h)


#: Past this many times the output's area, the evaluation transform resamples only its crop.
_MAX_RESIZED_AREA = 16


def transform_image(image, size: int, rng: np.random.Generator | None = None) -> torch.Tensor:
    """An RGB PIL image as uint8 ``[3, size, size]``: the evaluation transform, or with ``rng``
    the training one (random resized crop, then a flip with probability 1/2)."""
    from PIL import Image

    bicubic = Image.Resampling.BICUBIC
    if rng is None:
        resized, box = centre_crop_box(image.width, image.height, size)
        if resized[0] * resized[1] > _MAX_RESIZED_AREA * size * size:
            # A very thin image (1 x 100,000) would resize to gigabytes: resample only the
            # crop, from the same source pixels (it may differ from the two-step result by a
            # rounding step).
            scale = image.width / resized[0]
            source = tuple(value * scale for value in box)
            image = image.resize((size, size), bicubic, box=source)
        else:
            if resized != image.size:
                image = image.resize(resized, bicubic)
            image = image.crop(box)
    else:
        box = random_crop_box(image.width, image.height, rng)
        image = image.resize((size, size), bicubic, box=box)
        if rng.uniform() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


class TransformedImages(torch.utils.data.Dataset, ABC):
    """Images decoded or resized on access, as ``(uint8 [3, S, S], label)``.

    ``train=True`` applies the training augmentation, seeded by ``(seed, epoch, index)``; call
    :meth:`set_epoch` before each epoch (DataLoader workers get a fresh copy every epoch).
    Subclasses say where item ``i``'s image comes from.
    """

    def __init__(self, labels: torch.Tensor, image_size: int, *, train: bool, seed: int):
        self.labels, self.image_size, self.train, self.seed = labels, image_size, train, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @abstractmethod
    def image(self, item: int):
        """Item ``item``'s RGB PIL image, before the transform."""

    def _readable_image(self, item: int, tries: int = 10):
        """``(image, item)``: item ``item``'s image, or (a damaged file must not end a training
        run hours in) the next readable one and its index, the same every epoch; the skipped
        file is logged."""
        for offset in range(tries):
            used = (item + offset) % len(self)
            try:
                return self.image(used), used
            except UserInputError as error:
                if offset == tries - 1:
                    raise
                log.warning("skipping a training image: %s", error)
        raise AssertionError("unreachable")

    def __getitem__(self, item: int) -> tuple[torch.Tensor, torch.Tensor]:
        item = int(item)
        rng = None
        if self.train:
            rng = np.random.default_rng(np.random.SeedSequence((self.seed, self.epoch, item)))
            image, item = self._readable_image(item)
        else:
            image = self.image(item)
        return transform_image(image, self.image_size, rng), self.labels[item]


class ImageFiles(TransformedImages):
    """The images of a :class:`FileIndex`, read and decoded on access (bounded as every user
    image is: :func:`trainables.readers.open_image`)."""

    def __init__(self, index: FileIndex, image_size: int, *, train: bool = False, seed: int = 0):
        labels = torch.from_numpy(np.asarray(index.labels, dtype=np.int64))
        super().__init__(labels, image_size, train=train, seed=seed)
        self.index = index

    def image(self, item: int):
        path = Path(self.index.files[item])
        data = read_bytes(path, max_bytes=MAX_IMAGE_BYTES)
        return open_image(data, str(path), field="data.root")


class InMemoryImages(torch.utils.data.TensorDataset):
    """A split already in memory at the model's size: items are its own tensors."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        super().__init__(images, labels)
        self.labels = labels


class ResizedImages(TransformedImages):
    """uint8 ``[N, 3, H, W]`` images held in memory at their own size (CIFAR's 32 px), resized
    on access to the model's input size."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, image_size: int):
        super().__init__(labels, image_size, train=False, seed=0)
        self.images = images

    def image(self, item: int):
        from PIL import Image

        return Image.fromarray(self.images[item].permute(1, 2, 0).numpy())


def decode_all(
    dataset: TransformedImages, indices: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The images and labels at ``indices``, decoded into memory (an evaluation subset) one at a
    time into preallocated tensors."""
    indices = list(indices)
    size = dataset.image_size
    images = torch.empty(len(indices), 3, size, size, dtype=torch.uint8)
    labels = torch.empty(len(indices), dtype=torch.int64)
    for row, item in enumerate(indices):
        images[row], labels[row] = dataset[item]
    return images, labels
