"""Datasets stored as arrays in binary files, read one image at a time: STL-10 and PCAM.

Both are laid out as torchvision writes them (``root`` is the folder holding the dataset's
folder), so a copy fetched with torchvision's ``download=True`` is read as it is:

* ``stl10``: ``stl10_binary/{train,test}_{X,y}.bin``, 96 px images stored channel-major and
  column-major, labels 1-10. "test" is the official test set; "val" the last
  :data:`VAL_FRACTION` of the official training set, held out of "train".
* ``pcam``: ``pcam/camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5`` (HDF5, read with
  h5py), 96 px patches; "val" is the official validation set.

Only the labels are read up front; images are sliced out of a memory map or the HDF5 file when
an item is asked for (each DataLoader process opens the file on its own), so a split never has
to fit in memory. Each split is listed in one fixed shuffled order, as image folders are, so
that its first ``N`` images (an evaluation cap) sample both classes of PCAM and every class of
STL-10.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from trainables.data.image_files import TransformedImages
from trainables.data.splits import check_split
from trainables.errors import UserInputError, must

#: The share of STL-10's official training set held out as its "val" split.
VAL_FRACTION = 0.1
_STL10_SIDE = 96


@dataclass(frozen=True)
class ArrayLayout:
    """Where one array dataset's files are and which torchvision class fetches them."""

    name: str
    folder: str
    torchvision_class: str
    description: str
    classes: tuple[str, ...]


ARRAY_LAYOUTS: dict[str, ArrayLayout] = {
    "stl10": ArrayLayout(
        "stl10",
        "stl10_binary",
        "STL10",
        "STL-10 (stl10_binary/{train,test}_{X,y}.bin)",
        ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"),
    ),
    "pcam": ArrayLayout(
        "pcam",
        "pcam",
        "PCAM",
        "PatchCamelyon (pcam/camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5)",
        ("lymph node", "lymph node containing metastatic tumor tissue"),
    ),
}


def _missing(layout: ArrayLayout, root: Path, what: str) -> UserInputError:
    fetch = (
        f'python -c "import torchvision; torchvision.datasets.{layout.torchvision_class}'
        f"('{root}', split='test', download=True)\""
    )
    return UserInputError(
        f"`data.root` must be a folder holding {layout.name} ({layout.folder}/), but {what} in "
        f"'{root}'. This tool never downloads: on a machine with internet run {fetch} and copy "
        f"{layout.folder}/ into '{root}'."
    )


def _stl10_files(root: Path, split: str) -> tuple[Path, np.ndarray, np.ndarray]:
    """STL-10's image file, its labels (0-9) and the image rows of ``split``."""
    layout = ARRAY_LAYOUTS["stl10"]
    official = "test" if split == "test" else "train"
    images = root / layout.folder / f"{official}_X.bin"
    labels_file = root / layout.folder / f"{official}_y.bin"
    for path in (images, labels_file):
        if not path.is_file():
            raise _missing(layout, root, f"{layout.folder}/{path.name} is missing")
    labels = np.fromfile(labels_file, dtype=np.uint8).astype(np.int64) - 1
    image_bytes = 3 * _STL10_SIDE * _STL10_SIDE
    if images.stat().st_size != len(labels) * image_bytes or not np.all(
        (labels >= 0) & (labels < 10)
    ):
        raise UserInputError(
            f"{images}: must hold one {_STL10_SIDE}x{_STL10_SIDE} image per label of "
            f"{labels_file.name} ({len(labels)} labels from 1 to 10), but it holds "
            f"{images.stat().st_size / image_bytes:g} images: the copy is incomplete."
        )
    rows = np.arange(len(labels))
    if split != "test":
        cut = len(labels) - round(len(labels) * VAL_FRACTION)
        rows = rows[cut:] if split == "val" else rows[:cut]
    return images, labels, rows


def _pcam_files(root: Path, split: str) -> tuple[Path, Path]:
    layout = ARRAY_LAYOUTS["pcam"]
    official = {"train": "train", "val": "valid", "test": "test"}[split]
    paths = tuple(
        root / layout.folder / f"camelyonpatch_level_2_split_{official}_{kind}.h5"
        for kind in ("x", "y")
    )
    for path in paths:
        if not path.is_file():
            raise _missing(layout, root, f"{layout.folder}/{path.name} is missing")
    return paths


def _h5py():
    try:
        import h5py
    except ImportError:
        raise UserInputError(
            "`pcam` must be read with h5py (its files are HDF5), but it is not installed: "
            "pip install h5py."
        ) from None
    return h5py


def _pcam_labels(labels_file: Path) -> np.ndarray:
    h5py = _h5py()
    try:
        with h5py.File(labels_file, "r") as file:
            labels = np.asarray(file["y"]).reshape(-1).astype(np.int64)
    except (OSError, KeyError) as error:
        raise UserInputError(
            f"{labels_file}: must be an HDF5 file with a dataset `y`, but it cannot be read "
            f"({error})."
        ) from None
    if not np.all((labels == 0) | (labels == 1)):
        raise UserInputError(f"{labels_file}: labels must be 0 or 1, but some are not.")
    return labels


def _check_pcam_images(images_file: Path, count: int) -> None:
    try:
        with _h5py().File(images_file, "r") as file:
            shape = tuple(file["x"].shape)
    except (OSError, KeyError) as error:
        raise UserInputError(
            f"{images_file}: must be an HDF5 file with a dataset `x`, but it cannot be read "
            f"({error})."
        ) from None
    if len(shape) != 4 or shape[0] != count or shape[3] != 3:
        raise UserInputError(
            f"{images_file}: `x` must hold {count} RGB patches [N, H, W, 3], one per label, "
            f"but has shape {list(shape)}."
        )


class ArrayImages(TransformedImages):
    """One split of an array dataset: item ``i`` is row ``rows[i]`` of its image file, opened
    lazily in each process that reads it (open files do not cross process boundaries)."""

    def __init__(
        self, name: str, root: str | Path, split: str, image_size: int, *, train=False, seed=0
    ):
        check_split(split)
        if name not in ARRAY_LAYOUTS:
            raise must("dataset", f"one of {', '.join(ARRAY_LAYOUTS)}", name)
        root = Path(root).expanduser()
        if name == "stl10":
            self.path, labels, rows = _stl10_files(root, split)
        else:
            self.path, labels_file = _pcam_files(root, split)
            labels = _pcam_labels(labels_file)
            _check_pcam_images(self.path, len(labels))
            rows = np.arange(len(labels))
        rows = rows[np.random.default_rng(0).permutation(len(rows))]
        super().__init__(torch.from_numpy(labels[rows]), image_size, train=train, seed=seed)
        self.name, self.rows, self.classes = name, rows, ARRAY_LAYOUTS[name].classes
        self._images = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_images"] = None  # reopened in the receiving process
        return state

    def _open(self):
        if self.name == "stl10":
            side = _STL10_SIDE
            return np.memmap(self.path, dtype=np.uint8, mode="r").reshape(-1, 3, side, side)
        return _h5py().File(self.path, "r")["x"]

    def image(self, item: int):
        from PIL import Image

        if self._images is None:
            self._images = self._open()
        pixels = np.asarray(self._images[int(self.rows[item])])
        if self.name == "stl10":  # stored [channel, column, row]
            pixels = pixels.transpose(2, 1, 0)
        return Image.fromarray(np.ascontiguousarray(pixels)).convert("RGB")
