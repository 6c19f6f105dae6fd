"""Tiny copies of STL-10, PCAM and CIFAR-10/100 in their real formats, written by the tests."""

from __future__ import annotations

import pickle
import struct

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


#: numpy's array-rebuilding function, whatever module this numpy keeps it in.
_RECONSTRUCT = np.ndarray(0).__reduce__()[0]


class Python2Pickler(pickle._Pickler):
    """Writes what Python 2's cPickle wrote at protocol 2, as in the CIFAR archives: every
    ``bytes`` and ``str`` as a Python 2 ``str`` (SHORT_BINSTRING / BINSTRING) and numpy's
    ``_reconstruct`` under its numpy 1.x module. (Python 3 writes ``bytes`` at protocol 2 as a
    call to ``_codecs.encode``, a global no real CIFAR file names.)"""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_python2_str(self, obj):
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<I", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = dispatch[str] = save_python2_str

    def save_global(self, obj, name=None):
        if obj is not _RECONSTRUCT:
            return super().save_global(obj, name)
        self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
        self.memoize(obj)


def write_python2_pickle(path, obj) -> None:
    with open(path, "wb") as file:
        Python2Pickler(file, protocol=2).dump(obj)


def write_cifar(root, name: str, *, per_class: int = 2, seed: int = 0):
    """``cifar-10-batches-py/`` (``name="cifar10"``) or ``cifar-100-python/`` as the archives
    hold them: Python 2 pickles of dicts with ``str`` keys; ``data`` a uint8 array ``[N, 3072]``
    (each row the red, green and blue planes of a 32x32 image), the labels a list of ints, and
    the class names in the meta file. ``per_class`` images of every class in the training set
    (CIFAR-10's dealt over its five batches) and as many in the test set. Returns
    ``{"train" | "test": (images [N, 32, 32, 3], labels int64 [N])}``."""
    from trainables.data.class_lists import CIFAR10_CLASSES, CIFAR100_CLASSES, CIFAR100_COARSE

    rng = np.random.default_rng(seed)
    cifar10 = name == "cifar10"
    classes = CIFAR10_CLASSES if cifar10 else CIFAR100_CLASSES
    folder = root / ("cifar-10-batches-py" if cifar10 else "cifar-100-python")
    folder.mkdir(parents=True)
    coarse = list(CIFAR100_COARSE)
    coarse_of = {
        fine: coarse.index(group) for group, fines in CIFAR100_COARSE.items() for fine in fines
    }
    files = {
        "train": [f"data_batch_{n}" for n in range(1, 6)] if cifar10 else ["train"],
        "test": ["test_batch"] if cifar10 else ["test"],
    }
    described = {"train": "training", "test": "testing"}
    written = {}
    for split, names in files.items():
        labels = np.repeat(np.arange(len(classes)), per_class)
        rng.shuffle(labels)
        pixels = rng.integers(0, 256, (len(labels), 32, 32, 3), dtype=np.uint8)  # [N, H, W, C]
        rows = np.ascontiguousarray(pixels.transpose(0, 3, 1, 2).reshape(len(labels), 3072))
        parts = np.array_split(np.arange(len(labels)), len(names))
        for number, (file, part) in enumerate(zip(names, parts, strict=True), 1):
            batch = {
                b"batch_label": f"{described[split]} batch {number} of {len(names)}".encode(),
                b"data": rows[part],
                b"filenames": [f"image_{i:05d}.png".encode() for i in part],
            }
            if cifar10:
                batch[b"labels"] = labels[part].tolist()
            else:
                batch[b"fine_labels"] = labels[part].tolist()
                batch[b"coarse_labels"] = [coarse_of[classes[label]] for label in labels[part]]
            write_python2_pickle(folder / file, batch)
        written[split] = (pixels, labels.astype(np.int64))
    if cifar10:
        meta = {
            b"num_cases_per_batch": 10000,
            b"label_names": [c.encode() for c in classes],
            b"num_vis": 3072,
        }
    else:
        meta = {
            b"fine_label_names": [c.encode() for c in classes],
            b"coarse_label_names": [c.encode() for c in coarse],
        }
    write_python2_pickle(folder / ("batches.meta" if cifar10 else "meta"), meta)
    return written
