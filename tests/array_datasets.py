"""Tiny copies of STL-10 and PCAM in their real binary formats, written by the tests."""

from __future__ import annotations

import numpy as np


def write_stl10(root, *, train_per_class: int = 3, test_per_class: int = 2, seed: int = 0):
    """``stl10_binary/`` as the STL-10 archive holds it: images channel-major and column-major
    (``[N, 3, W, H]`` bytes), labels 1-10 as bytes. Returns the images as ``[N, H, W, 3]``."""
    rng = np.random.default_rng(seed)
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    written = {}
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        labels = np.repeat(np.arange(1, 11, dtype=np.uint8), per_class)
        rng.shuffle(labels)
        pixels = rng.integers(0, 256, (len(labels), 96, 96, 3), dtype=np.uint8)  # [N, H, W, C]
        pixels.transpose(0, 3, 2, 1).tofile(folder / f"{split}_X.bin")
        labels.tofile(folder / f"{split}_y.bin")
        written[split] = (pixels, labels.astype(np.int64) - 1)
    (folder / "class_names.txt").write_text(
        "airplane\nbird\ncar\ncat\ndeer\ndog\nhorse\nmonkey\nship\ntruck\n"
    )
    return written


def write_pcam(root, *, per_split: int = 6, seed: int = 0, side: int = 96):
    """``pcam/`` as PatchCamelyon ships it: HDF5 files with ``x`` ``[N, 96, 96, 3]`` and ``y``
    ``[N, 1, 1, 1]``. Returns ``{split: (pixels, labels)}``."""
    import h5py

    rng = np.random.default_rng(seed)
    folder = root / "pcam"
    folder.mkdir(parents=True)
    written = {}
    for split in ("train", "valid", "test"):
        pixels = rng.integers(0, 256, (per_split, side, side, 3), dtype=np.uint8)
        labels = (np.arange(per_split) % 2).astype(np.uint8)
        rng.shuffle(labels)
        with h5py.File(folder / f"camelyonpatch_level_2_split_{split}_x.h5", "w") as file:
            file.create_dataset("x", data=pixels)
        with h5py.File(folder / f"camelyonpatch_level_2_split_{split}_y.h5", "w") as file:
            file.create_dataset("y", data=labels.reshape(-1, 1, 1, 1))
        written[split] = (pixels, labels.astype(np.int64))
    return written
