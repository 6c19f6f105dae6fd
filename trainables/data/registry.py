"""Dataset registry: one call returns any split of any supported dataset as an :class:`ImageSplit`.

- ``embedded`` and the other embedded datasets (:data:`~trainables.data.embedded.RECIPES`): the
  procedurally rendered default, the pretraining world and the zero-shot suite, built on first
  use and cached; splits "train", "val" and "test".
- ``cifar10`` / ``cifar100``: the torchvision datasets, read from ``root`` with
  ``download=False``; splits "train", "val" (the last :data:`VAL_SIZE` images of torchvision's
  training set, held out of "train" so that selection never reads the test set) and "test".
  This code never downloads: the files must be fetched beforehand on a machine with internet
  (cluster nodes often have none).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainables.cache import cache_dir
from trainables.data.embedded import load_embedded
from trainables.data.embedded_spec import RECIPES, EmbeddedSpec, embedded_spec
from trainables.data.splits import SPLITS, ImageSplit
from trainables.errors import UserInputError, must


@dataclass(frozen=True)
class _TorchvisionSource:
    class_name: str  # the torchvision.datasets class
    folder: str  # the folder torchvision expects under root


_TORCHVISION: dict[str, _TorchvisionSource] = {
    "cifar10": _TorchvisionSource("CIFAR10", "cifar-10-batches-py"),
    "cifar100": _TorchvisionSource("CIFAR100", "cifar-100-python"),
}
_TORCHVISION_SPLITS = ("train", "val", "test")
#: Images of a torchvision training set held out as the validation split.
VAL_SIZE = 5000


def available_datasets() -> tuple[str, ...]:
    """Names accepted by :func:`load_split`."""
    return (*RECIPES, *_TORCHVISION)


def default_root() -> Path:
    """Where torchvision datasets are looked for when no ``root`` is given."""
    return cache_dir("datasets", "torchvision")


def _quoted(names) -> str:
    return ", ".join(repr(name) for name in names)


def load_split(
    name: str,
    split: str,
    *,
    root: str | Path | None = None,
    spec: EmbeddedSpec | None = None,
) -> ImageSplit:
    """Images (uint8 ``[N, 3, H, W]``) and labels (int64 ``[N]``) of ``split`` of dataset ``name``.

    ``spec`` configures the embedded dataset (default :class:`EmbeddedSpec`; ignored by the
    others); ``root`` is the folder holding the torchvision datasets (default
    :func:`default_root`; ignored by the embedded dataset, which lives in the cache). Unknown
    names, splits, or missing files raise :class:`UserInputError`.
    """
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
    return _load_torchvision(name, split, Path(root).expanduser() if root else default_root())


def _load_torchvision(name: str, split: str, root: Path) -> ImageSplit:
    source = _TORCHVISION[name]
    if not (root / source.folder).is_dir():
        raise _missing(name, root)
    import torchvision.datasets

    dataset_class = getattr(torchvision.datasets, source.class_name)
    try:
        dataset = dataset_class(str(root), train=split != "test", download=False)
    except RuntimeError as error:  # torchvision: "Dataset not found or corrupted."
        raise _missing(name, root) from error
    images = np.asarray(dataset.data, dtype=np.uint8)  # [N, 32, 32, 3]
    labels = np.asarray(dataset.targets, dtype=np.int64)
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
