"""One split of an image dataset in memory (:class:`ImageSplit`), and the split names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from trainables.data.embedded_taxonomy import ATTRIBUTES
from trainables.errors import must
from trainables.numbers import is_integer

if TYPE_CHECKING:
    import torch

#: Split names in seed order (the index is part of each embedded chunk's seed).
SPLITS: tuple[str, ...] = ("train", "val", "test")


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise must("split", f"one of {', '.join(map(repr, SPLITS))}", split)
    return split


@dataclass(frozen=True)
class ImageSplit:
    """Images and labels of one split.

    ``images`` is a uint8 tensor ``[N, 3, H, W]``; ``labels`` an int64 tensor ``[N]``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    #: int64 ``[N, len(ATTRIBUTES)]`` of an embedded split (None for other datasets).
    attributes: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(f"images must be [N, 3, H, W], got {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"labels must be [{self.images.shape[0]}], got {tuple(self.labels.shape)}"
            )
        expected = (self.images.shape[0], len(ATTRIBUTES))
        if self.attributes is not None and tuple(self.attributes.shape) != expected:
            raise ValueError(f"attributes must be {list(expected)}, got {self.attributes.shape}")

    @classmethod
    def from_numpy(
        cls, images_nhwc: np.ndarray, labels: np.ndarray, attributes: np.ndarray | None = None
    ) -> ImageSplit:
        """Build from uint8 ``[N, H, W, 3]`` images and integer labels (copies into NCHW)."""
        import torch

        chw = np.ascontiguousarray(np.asarray(images_nhwc, dtype=np.uint8).transpose(0, 3, 1, 2))
        table = None
        if attributes is not None:
            table = torch.from_numpy(np.asarray(attributes, dtype=np.int64).reshape(-1, 4))
        return cls(
            torch.from_numpy(chw), torch.from_numpy(np.asarray(labels, dtype=np.int64)), table
        )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def float_images(self) -> torch.Tensor:
        """The images as float32 in [0, 1], ``[N, 3, H, W]``."""
        return self.images.float().div_(255.0)

    def subset(self, n: int) -> ImageSplit:
        """The first ``n`` images (all of them when ``n`` exceeds the size)."""
        if not is_integer(n) or n < 0:
            raise must("n", "a non-negative integer", n)
        attributes = None if self.attributes is None else self.attributes[:n]
        return ImageSplit(self.images[:n], self.labels[:n], attributes)
