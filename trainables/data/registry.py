"""Dataset registry: any split of any supported dataset, for training (:func:`training_set`, a
torch dataset) or evaluation (:func:`load_split`, an :class:`ImageSplit` in memory).

- ``embedded`` and the other embedded datasets (:data:`~trainables.data.embedded_spec.RECIPES`):
  the procedurally rendered default, the pretraining world and the zero-shot suite, built on
  first use and cached; splits "train", "val" and "test".
- ``cifar10`` / ``cifar100``: torchvision's folders of pickled batches, read without running
  code from them (:mod:`trainables.data.cifar_files`); "val" is the last :data:`VAL_SIZE`
  training images, held out of "train" so that selection never reads the test set.
- ``imagenet1k`` and ``tinyimagenet``: image folders (``train/<wnid>/``, ``val/``;
  :mod:`trainables.data.image_files`); "test" is the official validation set, "val" a few
  images of every class held out of "train".
- ``imagefolder``: any image folder in that layout (``root`` required), its classes its folders.
- the rest of the zero-shot suite: ``stl10`` and ``pcam`` (binary arrays,
  :mod:`trainables.data.array_files`), ``sun397``, ``food101``, ``pets``, ``flowers``, ``dtd``,
  ``eurosat``, ``fgvc_aircraft``, ``caltech101``, ``caltech256`` and ``cars`` (image files with
  their annotation files, :mod:`trainables.data.suite_layouts`), all in torchvision's layouts.

Where the files are: :mod:`trainables.data.locations` (one root can hold them all). The embedded
and CIFAR splits are held as uint8 arrays at their own size (resized on access when the model
wants another); every other dataset is streamed: an index of its images, decoded on access by
the DataLoader's worker processes. :func:`load_split` decodes at most :data:`MAX_DECODED` images
of a streamed dataset (an evaluation cap).

This code never downloads: the files must be fetched beforehand on a machine with internet
(cluster nodes often have none).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from trainables.data.array_files import ARRAY_LAYOUTS
from trainables.data.embedded import load_embedded
from trainables.data.embedded_spec import RECIPES, EmbeddedSpec, embedded_spec
from trainables.data.locations import dataset_root, default_root, image_folder_root
from trainables.data.splits import SPLITS, ImageSplit
from trainables.data.suite_layouts import LAYOUTS
from trainables.errors import UserInputError, must
from trainables.numbers import is_integer

if TYPE_CHECKING:
    import torch

__all__ = [
    "MAX_DECODED",
    "VAL_SIZE",
    "available_datasets",
    "default_root",
    "describe_on_disk",
    "load_split",
    "training_set",
]


@dataclass(frozen=True)
class _TorchvisionSource:
    class_name: str  # the torchvision.datasets class
    folder: str  # the folder torchvision expects under root


_TORCHVISION: dict[str, _TorchvisionSource] = {
    "cifar10": _TorchvisionSource("CIFAR10", "cifar-10-batches-py"),
    "cifar100": _TorchvisionSource("CIFAR100", "cifar-100-python"),
}
_TORCHVISION_SPLITS = ("train", "val", "test")
#: Image-folder datasets and the layout each reads.
_IMAGE_FOLDERS: dict[str, str] = {
    "imagenet1k": "ILSVRC2012 (train/<wnid>/, val/<wnid>/)",
    "tinyimagenet": "TinyImageNet (train/<wnid>/images/, val/images/, val/val_annotations.txt)",
    "imagefolder": "an image folder (train/<class>/, val/<class>/)",
}
#: Every dataset read on access rather than held in memory.
STREAMED: tuple[str, ...] = (*_IMAGE_FOLDERS, *ARRAY_LAYOUTS, *LAYOUTS)
#: The most images :func:`load_split` decodes from a streamed dataset into memory.
MAX_DECODED = 50_000
#: Images of a torchvision training set held out as the validation split.
VAL_SIZE = 5000


def available_datasets() -> tuple[str, ...]:
    """Names accepted by :func:`load_split`."""
    return (*RECIPES, *_TORCHVISION, *STREAMED)


def _quoted(names) -> str:
    return ", ".join(repr(name) for name in names)


def load_split(
    name: str,
    split: str,
    *,
    root: str | Path | None = None,
    spec: EmbeddedSpec | None = None,
    image_size: int | None = None,
    samples: int | None = None,
) -> ImageSplit:
    """Images (uint8 ``[N, 3, H, W]``) and labels (int64 ``[N]``) of ``split`` of dataset ``name``.

    ``spec`` configures the embedded dataset (default :class:`EmbeddedSpec`; ignored by the
    others); ``root`` is the folder holding a file-based dataset (default :func:`default_root`;
    ignored by the embedded dataset, which lives in the cache). ``samples`` keeps the first
    ones; ``image_size`` resizes the images to the model's input (default: their own size; an
    image folder needs one). Unknown names, splits, or missing files raise
    :class:`UserInputError`.
    """
    from trainables.data.image_files import ResizedImages, decode_all

    if samples is not None and (not is_integer(samples) or samples < 0):
        raise must("samples", "a non-negative integer or None", samples)
    if image_size is not None and (not is_integer(image_size) or image_size < 1):
        raise must("image_size", "a positive integer or None", image_size)
    if name in STREAMED:
        dataset = _streamed(name, split, root, image_size or 224, train=False, seed=0)
        count = len(dataset) if samples is None else min(samples, len(dataset))
        if count > MAX_DECODED:
            raise must(
                "samples",
                f"at most {MAX_DECODED:,} images of {name} to hold in memory (a cap)",
                count,
            )
        return ImageSplit(*decode_all(dataset, range(count)))
    data = _in_memory(name, split, root, spec)
    if samples is not None:
        data = data.subset(samples)
    if image_size is None or image_size == data.images.shape[-1]:
        return data
    resized = ResizedImages(data.images, data.labels, image_size)
    images, labels = decode_all(resized, range(len(resized)))
    return ImageSplit(images, labels, data.attributes)


def training_set(
    name: str,
    *,
    root: str | Path | None = None,
    image_size: int | None = None,
    seed: int = 0,
    spec: EmbeddedSpec | None = None,
) -> torch.utils.data.Dataset:
    """The "train" split of ``name`` as a torch dataset of ``(uint8 [3, S, S], label)`` items
    with a ``labels`` tensor: in memory when the images already have the model's size, else
    resized on access; an image folder decoded on access with the training augmentation,
    seeded by ``seed`` (call ``set_epoch`` before each epoch)."""
    from trainables.data.image_files import InMemoryImages, ResizedImages

    if name in STREAMED:
        return _streamed(name, "train", root, image_size or 224, train=True, seed=seed)
    data = _in_memory(name, "train", root, spec)
    if image_size is None or image_size == data.images.shape[-1]:
        return InMemoryImages(data.images, data.labels)
    return ResizedImages(data.images, data.labels, image_size)


def describe_on_disk(name: str, root: str | Path | None = None) -> dict:
    """What a file-based dataset holds under ``root``: its folder, number of classes and images
    per split. A missing or incomplete dataset raises the one line that says what is missing."""
    if name in RECIPES:
        raise must(
            "dataset", "a dataset read from files (the embedded ones live in the cache)", name
        )
    from trainables.data.class_lists import dataset_classes, dataset_labels

    if name in STREAMED:
        splits = {split: _streamed(name, split, root, 224, train=False, seed=0) for split in SPLITS}
        sizes = {split: len(dataset) for split, dataset in splits.items()}
    else:
        sizes = {split: len(_in_memory(name, split, root, None)) for split in _TORCHVISION_SPLITS}
    dataset_labels(name, root)  # an incomplete class list fails here, not in a job
    return {
        "dataset": name,
        "root": str(_folder(name, root)),
        "format": _format(name),
        "classes": len(dataset_classes(name, root)),
        "splits": sizes,
    }


def _folder(name: str, root) -> Path:
    """Where ``name``'s files are: an image folder's own folder, else the root of torchvision's
    folders."""
    return image_folder_root(name, root) if name in _IMAGE_FOLDERS else dataset_root(root)


def _format(name: str) -> str:
    if name in _IMAGE_FOLDERS:
        return _IMAGE_FOLDERS[name]
    if name in ARRAY_LAYOUTS:
        return ARRAY_LAYOUTS[name].description
    if name in LAYOUTS:
        return LAYOUTS[name].description
    source = _TORCHVISION[name]
    return f"torchvision {source.class_name} ({source.folder}/)"


def _in_memory(name: str, split: str, root, spec: EmbeddedSpec | None) -> ImageSplit:
    if name in RECIPES:
        if split not in SPLITS:
            raise must("split", f"one of {_quoted(SPLITS)} for {name!r}", split)
        if spec is not None and spec.dataset != name:
            raise must("spec", f"a spec of {name!r}", spec.dataset)
        return load_embedded(spec or embedded_spec(name)).split(split)
    if name not in _TORCHVISION:
        raise must("dataset", f"one of {_quoted(available_datasets())}", name)
    if split not in _TORCHVISION_SPLITS:
        raise must("split", f"one of {_quoted(_TORCHVISION_SPLITS)} for {name!r}", split)
    return _load_torchvision(name, split, dataset_root(root))


def _streamed(name: str, split: str, root, image_size: int, *, train: bool, seed: int):
    """Split ``split`` of a streamed dataset, decoded on access."""
    from trainables.data.array_files import ArrayImages
    from trainables.data.image_files import ImageFiles

    if name in _IMAGE_FOLDERS:
        return _image_folder(name, split, root, image_size, train=train, seed=seed)
    if name in ARRAY_LAYOUTS:
        return ArrayImages(name, dataset_root(root), split, image_size, train=train, seed=seed)
    index = _file_index(name, dataset_root(root), split)
    return ImageFiles(index, image_size, train=train, seed=seed)


@functools.lru_cache(maxsize=8)
def _file_index(name: str, folder: Path, split: str):
    """The index of a split of files, listed once per process: a job's training set and its
    calibration batch read the same split, and listing ImageNet's 1.28 million files on a
    network file system takes a while."""
    from trainables.data.image_files import index_split
    from trainables.data.suite_layouts import layout_index

    if name in _IMAGE_FOLDERS:
        return index_split(folder, split)
    return layout_index(name, folder, split)


def _image_folder(name: str, split: str, root, image_size: int, *, train: bool, seed: int):
    from trainables.data.class_lists import dataset_classes
    from trainables.data.image_files import ImageFiles

    folder = image_folder_root(name, root)
    index = _file_index(name, folder, split)
    expected = dataset_classes(name, root)
    if index.classes != expected:
        unknown = sorted(set(index.classes) - set(expected))
        missing = sorted(set(expected) - set(index.classes))
        detail = f"unknown {unknown[:3]}" if unknown else f"missing {missing[:3]}"
        raise UserInputError(
            f"`data.root` must hold the {len(expected)} class folders of {name} "
            f"({_IMAGE_FOLDERS[name]}), but {folder}/train has {len(index.classes)} ({detail})."
        )
    return ImageFiles(index, image_size, train=train, seed=seed)


def _load_torchvision(name: str, split: str, root: Path) -> ImageSplit:
    # Not torchvision's reader: its pickle.load runs whatever code the files hold.
    from trainables.data.cifar_files import read_cifar
    from trainables.data.suite_annotations import MissingFiles

    source = _TORCHVISION[name]
    if not (root / source.folder).is_dir():
        raise _missing(name, root)
    try:
        images, labels = read_cifar(name, root, train=split != "test")  # [N, 32, 32, 3], [N]
    except MissingFiles as error:  # an incomplete copy: which file, then how to fetch it
        raise UserInputError(f"{error}. {_missing(name, root)}") from None
    if split != "test":
        held_out = min(VAL_SIZE, len(labels) // 10)  # tests build small files in this format
        cut = len(labels) - held_out
        part = slice(cut, None) if split == "val" else slice(None, cut)
        images, labels = images[part], labels[part]
    return ImageSplit.from_numpy(images, labels)


def _missing(name: str, root: Path) -> UserInputError:
    source = _TORCHVISION[name]
    fetch = (
        f'python -c "import torchvision; torchvision.datasets.{source.class_name}'
        f"('{root}', download=True)\""
    )
    return UserInputError(
        f"`root` must be a folder holding {name} ({source.folder}/), but got '{root}'. "
        f"This tool never downloads: on a machine with internet run {fetch} "
        f"and copy {source.folder}/ into '{root}'."
    )
