"""Where a file-based dataset's files are: the root a user names (or the default one in the
cache) and each dataset's conventional folder under it.

One root can hold a whole suite: torchvision's folders (``cifar-10-batches-py/``,
``food-101/``, ``stl10_binary/``, ...) side by side with the image folders under the names of
:data:`IMAGE_FOLDER_NAMES` (``imagenet/train/<wnid>/``, ``tiny-imagenet-200/train/``). An image
folder's root may also be its own folder (the one holding ``train/``).
"""

from __future__ import annotations

from pathlib import Path

from trainables.cache import cache_dir

#: The conventional folder of each named image-folder dataset under a shared root.
IMAGE_FOLDER_NAMES: dict[str, str] = {
    "imagenet1k": "imagenet",
    "tinyimagenet": "tiny-imagenet-200",
}


def default_root() -> Path:
    """Where file-based datasets are looked for when no root is given."""
    return cache_dir("datasets", "torchvision")


def dataset_root(root: str | Path | None) -> Path:
    """The folder holding torchvision-layout datasets: ``root``, or :func:`default_root`."""
    return Path(root).expanduser() if root else default_root()


def image_folder_root(name: str, root: str | Path | None) -> Path:
    """The folder holding ``train/`` and ``val/`` of image-folder dataset ``name``: ``root``
    itself when it holds ``train/``, else its conventional subfolder (also under the default
    root)."""
    folder = dataset_root(root)
    conventional = IMAGE_FOLDER_NAMES.get(name)
    if conventional is None or (root and (folder / "train").is_dir()):
        return folder
    return folder / conventional
