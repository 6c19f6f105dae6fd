"""CIFAR-10 and CIFAR-100 read from their python-pickle batches without running code from them.

Both are laid out as torchvision 0.29 lays them out (``root`` is the folder holding the
dataset's folder), so a copy fetched with torchvision's ``download=True`` is read as it is:

* ``cifar10``: ``cifar-10-batches-py/data_batch_1`` to ``data_batch_5`` (the training set, in
  that order), ``test_batch``, and ``batches.meta`` (the class names, ``label_names``);
* ``cifar100``: ``cifar-100-python/train``, ``test`` and ``meta`` (``fine_label_names``); the
  labels are the 100 fine ones.

Each batch is a Python 2 pickle of a dict: ``data``, a numpy uint8 array ``[N, 3072]`` (one
image a row: its red, green and blue 32x32 planes), and ``labels`` (CIFAR-10) or
``fine_labels`` (CIFAR-100), a list of ``N`` ints. torchvision reads it with ``pickle.load``,
which calls whatever the file names. Here the unpickler resolves only the three globals that a
pickled numpy array names and maps each to an inert record of its arguments; the array is then
built from the recorded bytes with ``np.frombuffer``. No function named by a file is ever
called, and a file that names any other global is refused, unread, in one line. Before that,
the opcodes are scanned (:func:`_check_opcodes`): a file may use only those Python 2 wrote for
plain data, nest a bounded number of containers and index its memo within range, so a crafted
file can neither ask for gigabytes of memory nor overflow the C stack.

No md5 sum is checked, so tiny copies in the real format are read too. A truncated or garbled
file, a wrong shape or a label out of range is one line naming the file; a missing file raises
:class:`~trainables.data.suite_annotations.MissingFiles`, which the caller completes with how to
fetch the dataset.
"""

from __future__ import annotations

import io
import math
import pickle
import pickletools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainables.data.suite_annotations import required
from trainables.errors import UserInputError, must
from trainables.numbers import is_integer
from trainables.readers import bad_file, read_bytes

#: The largest file read. The largest real one, ``cifar-100-python/train``, holds 50,000 images
#: of 3,072 bytes with their names and labels: about 155 MB.
MAX_BATCH_BYTES = 256 * 2**20
_SIDE = 32
_ROW = 3 * _SIDE * _SIDE  # one image: the red plane, then the green, then the blue


@dataclass(frozen=True)
class CifarLayout:
    """Where one CIFAR dataset's files are, and the keys its dicts hold."""

    name: str
    folder: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str
    labels_key: str
    names_key: str
    classes: int


CIFAR_LAYOUTS: dict[str, CifarLayout] = {
    "cifar10": CifarLayout(
        name="cifar10",
        folder="cifar-10-batches-py",
        train=tuple(f"data_batch_{number}" for number in range(1, 6)),
        test=("test_batch",),
        meta="batches.meta",
        labels_key="labels",
        names_key="label_names",
        classes=10,
    ),
    "cifar100": CifarLayout(
        name="cifar100",
        folder="cifar-100-python",
        train=("train",),
        test=("test",),
        meta="meta",
        labels_key="fine_labels",
        names_key="fine_label_names",
        classes=100,
    ),
}


def read_cifar(name: str, root: str | Path, *, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """The official training set (``train``) or test set of ``name``, as torchvision's ``.data``
    and ``.targets`` hold it: images uint8 ``[N, 32, 32, 3]`` and labels int64 ``[N]``, in the
    order of the files. ``root`` is the folder holding the dataset's folder."""
    layout = _layout(name)
    folder = Path(root).expanduser() / layout.folder
    # Every file is looked for before any is read: an incomplete copy fails at once.
    paths = [required(folder / file) for file in (layout.train if train else layout.test)]
    batches = [_batch(path, layout) for path in paths]
    rows = np.concatenate([rows for rows, _ in batches])  # a copy: writable, unlike frombuffer's
    labels = np.concatenate([labels for _, labels in batches])
    return rows.reshape(-1, 3, _SIDE, _SIDE).transpose(0, 2, 3, 1), labels


def read_cifar_classes(name: str, root: str | Path) -> tuple[str, ...]:
    """The class names of ``name`` in label order, from its meta file (``batches.meta`` or
    ``meta``), as torchvision's ``.classes`` holds them."""
    layout = _layout(name)
    path = required(Path(root).expanduser() / layout.folder / layout.meta)
    entry = _unpickled(path)
    key = layout.names_key
    names = entry[key] if isinstance(entry, dict) and key in entry else entry
    if not (
        isinstance(names, list)
        and len(names) == layout.classes
        and all(isinstance(class_name, str) for class_name in names)
    ):
        raise bad_file(
            path,
            f"must hold `{key}`, a list of {layout.classes} class names, but got {_kind(names)}.",
        )
    return tuple(names)


def _layout(name: str) -> CifarLayout:
    if name not in CIFAR_LAYOUTS:
        raise must("dataset", f"one of {', '.join(map(repr, CIFAR_LAYOUTS))}", name)
    return CIFAR_LAYOUTS[name]


# -- unpickling without calling anything ---------------------------------------------------------


class _Record:
    """A call a pickle asks for, recorded instead of made: its arguments, then the state the
    pickle sets on its result."""

    __slots__ = ("args", "state")

    # __new__, not __init__: a pickle may create the object without calling it (NEWOBJ).
    def __new__(cls, *args: object) -> _Record:
        record = super().__new__(cls)
        record.args, record.state = args, None
        return record

    def __setstate__(self, state: object) -> None:
        self.state = state


class _PickledArray(_Record):
    """numpy's ``_reconstruct(ndarray, (0,), b"b")``; its state is the array's shape, dtype,
    order and bytes."""

    __slots__ = ()


class _PickledDtype(_Record):
    """``numpy.dtype("u1", 0, 1)``; its state (byte order, fields) is not needed for bytes."""

    __slots__ = ()


#: numpy.ndarray: only ever the first argument of ``_reconstruct``, never called.
_NDARRAY = object()
#: The globals a pickled numpy array names (numpy 1.x wrote ``numpy.core``, numpy 2 writes
#: ``numpy._core``) and what stands for each here. No other global is resolved.
_GLOBALS: dict[tuple[str, str], object] = {
    ("numpy.core.multiarray", "_reconstruct"): _PickledArray,
    ("numpy._core.multiarray", "_reconstruct"): _PickledArray,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _PickledDtype,
}


#: The opcodes Python 2's cPickle writes (protocols 0 to 2) for dicts, lists, tuples, strings,
#: numbers and numpy arrays. Left out: persistent ids, extension codes, classes called by name
#: (INST, OBJ), DUP (a byte that doubles a reference) and all of Python 3's opcodes.
_OPCODES = frozenset(
    ("PROTO", "STOP", "MARK", "POP", "POP_MARK", "NONE", "NEWTRUE", "NEWFALSE", "INT", "BININT",
     "BININT1", "BININT2", "LONG", "LONG1", "FLOAT", "BINFLOAT", "STRING", "BINSTRING",
     "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "EMPTY_DICT", "DICT", "SETITEM", "SETITEMS",
     "EMPTY_LIST", "LIST", "APPEND", "APPENDS", "EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2",
     "TUPLE3", "GLOBAL", "REDUCE", "BUILD", "PUT", "BINPUT", "LONG_BINPUT", "GET", "BINGET",
     "LONG_BINGET")
)  # fmt: skip
#: The opcodes that make an object holding others (a record holds its arguments).
_CONTAINERS = frozenset(
    ("EMPTY_DICT", "DICT", "EMPTY_LIST", "LIST", "EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2",
     "TUPLE3", "REDUCE")
)  # fmt: skip
#: The most containers one file makes. A real batch makes about a dozen; their number bounds how
#: deep objects nest, and a million nested tuples overflow the C stack when one is hashed.
_MAX_CONTAINERS = 1000


def _check_opcodes(data: bytes, path: Path) -> None:
    """Refuse, before anything is built, a pickle that a CIFAR batch never is: an opcode not in
    :data:`_OPCODES`, more than :data:`_MAX_CONTAINERS` containers, or a memo index beyond the
    number of opcodes read (the unpickler sizes its memo by the largest index: 4 bytes can ask
    for gigabytes). A truncated or garbled pickle raises ValueError."""
    containers = 0
    for count, (opcode, arg, _) in enumerate(pickletools.genops(data)):
        if opcode.name not in _OPCODES:
            raise _never(path, f"holds the opcode {opcode.name}")
        containers += opcode.name in _CONTAINERS
        if containers > _MAX_CONTAINERS:
            raise _never(path, f"makes more than {_MAX_CONTAINERS:,} containers")
        if opcode.name.endswith("PUT") and arg > count:
            raise ValueError(f"memo index {arg:,} at opcode {count:,}")


class _BatchUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, path: Path) -> None:
        # latin1, as torchvision reads them: a Python 2 `str` (the keys, the pixels) loads as
        # text whose characters are its bytes.
        super().__init__(io.BytesIO(data), encoding="latin1")
        self.path = path

    def find_class(self, module: str, name: str) -> object:
        found = _GLOBALS.get((module, name))
        if found is None:
            raise _never(self.path, f"refers to {_shown(f'{module}.{name}')}")
        return found


def _unpickled(path: Path) -> object:
    data = read_bytes(path, max_bytes=MAX_BATCH_BYTES)
    try:
        _check_opcodes(data, path)
        return _BatchUnpickler(data, path).load()
    except UserInputError:
        raise
    # Nothing named by the file runs, so whatever the pickle machinery raises (EOFError,
    # UnpicklingError, ValueError, TypeError, ...) is the same mistake: a damaged file.
    except Exception as error:
        raise bad_file(
            path,
            f"must be a pickle of a CIFAR batch, but it cannot be read ({_reason(error)}): the "
            "copy is damaged or incomplete.",
        ) from None


def _never(path: Path, what: str) -> UserInputError:
    return bad_file(path, f"{what}, which a CIFAR batch never does; it is not read.")


def _shown(text: str) -> str:
    """A name from a file, on one line and short."""
    shown = text if text.isprintable() else ascii(text)
    return shown if len(shown) <= 120 else f"{shown[:117]}..."


def _reason(error: Exception) -> str:
    detail = " ".join(str(error).split())[:120]
    return f"{type(error).__name__}: {detail}" if detail else type(error).__name__


def _kind(value: object) -> str:
    """What a value from a pickle is, in a few words."""
    if isinstance(value, _PickledArray):
        return "a numpy array"
    if isinstance(value, dict):
        keys = sorted(
            repr(key[:40]) if isinstance(key, (str, bytes)) else _kind(key) for key in value
        )
        return f"a dict with the keys {_shown(', '.join(keys[:6]))}"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    name = type(value).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


# -- one batch ----------------------------------------------------------------------------------


def _batch(path: Path, layout: CifarLayout) -> tuple[np.ndarray, np.ndarray]:
    """The image rows (uint8 ``[N, 3072]``) and labels (int64 ``[N]``) of one batch file."""
    entry = _unpickled(path)
    key = layout.labels_key
    if not (isinstance(entry, dict) and "data" in entry and key in entry):
        wanted = f"must hold a dict with `data` and `{key}` ({layout.name})"
        raise bad_file(path, f"{wanted}, but holds {_kind(entry)}.")
    rows = _pixels(entry["data"], path)
    return rows, _labels(entry[key], len(rows), layout, path)


def _pixels(value: object, path: Path) -> np.ndarray:
    """The uint8 ``[N, 3072]`` array a :class:`_PickledArray` records, built from its bytes."""
    wanted = f"`data` must be a uint8 array [N, {_ROW}] (N images of 3x{_SIDE}x{_SIDE})"
    if not isinstance(value, _PickledArray):
        raise bad_file(path, f"{wanted}, but got {_kind(value)}.")
    state = value.state
    if isinstance(state, tuple) and len(state) == 5:
        state = state[1:]  # (version, shape, dtype, fortran, bytes); older numpy wrote no version
    if not (
        isinstance(state, tuple)
        and len(state) == 4
        and isinstance(state[2], bool)  # Fortran order or not
        and value.args[:1] == (_NDARRAY,)
    ):
        raise bad_file(path, f"{wanted}, but its pickled array is malformed.")
    shape, dtype, fortran, raw = state
    spec = dtype.args[0] if isinstance(dtype, _PickledDtype) and dtype.args else None
    if spec not in ("u1", "|u1"):
        raise bad_file(path, f"{wanted}, but got an array of {_shown(repr(spec))}.")
    if not (isinstance(shape, tuple) and all(is_integer(n) and n >= 0 for n in shape)):
        raise bad_file(path, f"{wanted}, but its shape is {_shown(repr(shape))}.")
    shown = _shown(str(list(shape)))
    if isinstance(raw, str):  # a Python 2 `str`, loaded as latin1 text
        try:
            raw = raw.encode("latin1")
        except UnicodeEncodeError:
            raise bad_file(path, f"{wanted}, but its bytes are text.") from None
    if not isinstance(raw, bytes) or len(raw) != math.prod(shape):
        size = f"{len(raw):,} bytes" if isinstance(raw, bytes) else _kind(raw)
        raise bad_file(path, f"{wanted}, but its shape {shown} holds {size}.")
    if len(shape) != 2 or shape[1] != _ROW:
        raise bad_file(path, f"{wanted}, but got the shape {shown}.")
    return np.frombuffer(raw, dtype=np.uint8).reshape(shape, order="F" if fortran else "C")


def _labels(value: object, count: int, layout: CifarLayout, path: Path) -> np.ndarray:
    key, top = layout.labels_key, layout.classes - 1
    if not isinstance(value, list) or not all(type(label) is int for label in value):
        raise bad_file(path, f"`{key}` must be a list of ints, but got {_kind(value)}.")
    low, high = (min(value), max(value)) if value else (0, 0)
    if len(value) != count or low < 0 or high > top:
        raise bad_file(
            path,
            f"`{key}` must be {count} labels from 0 to {top}, one per image, but got "
            f"{len(value)} from {low} to {high}.",
        )
    return np.asarray(value, dtype=np.int64)
