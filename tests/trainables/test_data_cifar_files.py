"""CIFAR-10 and CIFAR-100 read from tiny copies in the real pickle format: parity with
torchvision's reader, the registry's splits, and files that would run code or are damaged."""

from __future__ import annotations

import os
import pickle
import pickletools

import numpy as np
import pytest

from tests.array_datasets import write_cifar, write_python2_pickle
from trainables.data import cifar_files
from trainables.data.cifar_files import CIFAR_LAYOUTS, read_cifar, read_cifar_classes
from trainables.data.registry import load_split
from trainables.errors import UserInputError

BATCH = {"cifar10": "data_batch_2", "cifar100": "train"}  # a training file of each


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    written = {name: write_cifar(root, name, per_class=3) for name in CIFAR_LAYOUTS}
    return root, written


def test_the_tiny_copies_name_the_globals_the_real_files_name(root):
    folder, _ = root
    for name, layout in CIFAR_LAYOUTS.items():
        data = (folder / layout.folder / BATCH[name]).read_bytes()
        ops = list(pickletools.genops(data))
        assert data[:2] == b"\x80\x02"  # protocol 2
        assert {arg for op, arg, _ in ops if op.name == "GLOBAL"} == {
            "numpy.core.multiarray _reconstruct",
            "numpy ndarray",
            "numpy dtype",
        }
        assert not {op.name for op, _, _ in ops} & {"BINUNICODE", "BINBYTES", "SHORT_BINBYTES"}


@pytest.mark.parametrize("train", [True, False], ids=["train", "test"])
@pytest.mark.parametrize("name", sorted(CIFAR_LAYOUTS))
def test_images_labels_and_classes_match_torchvision(root, monkeypatch, name, train):
    import torchvision.datasets
    import torchvision.datasets.cifar

    folder, written = root
    # torchvision's reader without its md5 sums, which a tiny copy cannot match
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args: True)
    reference_class = (
        torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    )
    reference = reference_class(str(folder), train=train, download=False)
    images, labels = read_cifar(name, folder, train=train)
    assert images.shape == (len(labels), 32, 32, 3) and images.dtype == np.uint8
    assert labels.dtype == np.int64
    assert np.array_equal(images, reference.data)
    assert labels.tolist() == reference.targets
    assert np.array_equal(images, written[name]["train" if train else "test"][0])
    assert read_cifar_classes(name, folder) == tuple(reference.classes)


@pytest.mark.parametrize("name", sorted(CIFAR_LAYOUTS))
def test_the_registry_holds_val_out_of_train(root, name):
    folder, written = root
    train_images, train_labels = written[name]["train"]
    splits = {split: load_split(name, split, root=folder) for split in ("train", "val", "test")}
    held_out = len(train_labels) // 10  # the registry's rule for a small copy
    assert len(splits["val"]) == held_out and len(splits["train"]) == len(train_labels) - held_out
    chw = train_images.transpose(0, 3, 1, 2)
    assert np.array_equal(splits["train"].images.numpy(), chw[:-held_out])
    assert np.array_equal(splits["val"].images.numpy(), chw[-held_out:])
    assert np.array_equal(splits["val"].labels.numpy(), train_labels[-held_out:])
    assert np.array_equal(splits["test"].labels.numpy(), written[name]["test"][1])


class _Command:
    """Pickles as a call of ``os.system``: what a hostile batch file would hold."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class _Global:
    def __init__(self, function, *args) -> None:
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def test_a_batch_that_would_run_a_command_is_refused_unread(tmp_path):
    write_cifar(tmp_path, "cifar10", per_class=1)
    witness = tmp_path / "ran"
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    batch.write_bytes(pickle.dumps({"data": _Command(f"touch '{witness}'"), "labels": []}, 2))
    with pytest.raises(UserInputError) as error:
        load_split("cifar10", "train", root=tmp_path)
    assert _one_line(error) == (
        f"{batch}: refers to posix.system, which a CIFAR batch never does; it is not read."
    )
    assert not witness.exists()


@pytest.mark.parametrize(
    "value",
    [
        _Global(eval, "1"),
        _Global(np.load, "x.npy"),  # numpy, but not one of the three names an array needs
        _Global(open, "/etc/hostname"),
    ],
    ids=["eval", "numpy.load", "open"],
)
def test_any_other_global_is_refused(tmp_path, value):
    write_cifar(tmp_path, "cifar100", per_class=1)
    write_python2_pickle(tmp_path / "cifar-100-python" / "test", {"data": value})
    with pytest.raises(UserInputError, match=r"cifar-100-python/test: refers to \S+\.\w+, which"):
        read_cifar("cifar100", tmp_path, train=False)


@pytest.mark.parametrize("keep", [0, 2, 40, 5000, -1], ids=lambda keep: f"first-{keep}")
def test_a_truncated_batch_is_one_line(tmp_path, keep):
    write_cifar(tmp_path, "cifar10", per_class=1)
    batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(batch.read_bytes()[:keep])
    with pytest.raises(UserInputError) as error:
        load_split("cifar10", "test", root=tmp_path)
    assert _one_line(error).startswith(f"{batch}: must be a pickle of a CIFAR batch")


def test_garbage_is_one_line(tmp_path):
    write_cifar(tmp_path, "cifar10", per_class=1)
    batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(UserInputError) as error:
        read_cifar("cifar10", tmp_path, train=False)
    assert _one_line(error).startswith(f"{batch}: ")


@pytest.mark.parametrize(
    ("batch", "expected"),
    [
        ({"data": np.zeros((2, 3000), np.uint8), "labels": [0, 1]}, r"uint8 array \[N, 3072\]"),
        ({"data": np.zeros((2, 3072), np.int64), "labels": [0, 1]}, "an array of 'i8'"),
        ({"data": np.zeros((2, 3072), object), "labels": [0, 1]}, "an array of 'O8'"),
        ({"data": [[0] * 3072] * 2, "labels": [0, 1]}, "but got a list of 2"),
        ({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 10]}, "2 labels from 0 to 9"),
        ({"data": np.zeros((2, 3072), np.uint8), "labels": [0]}, "but got 1 from 0 to 0"),
        ({"data": np.zeros((2, 3072), np.uint8), "labels": ["0", 1]}, "a list of ints"),
        (
            {"data": np.zeros((2, 3072), np.uint8), "fine_labels": [0, 1]},
            "with `data` and `labels`",
        ),
        ([1, 2], "but holds a list of 2"),
    ],
    ids=[
        "shape",
        "int64",
        "objects",
        "list",
        "label-range",
        "label-count",
        "label-type",
        "keys",
        "not-a-dict",
    ],
)
def test_a_batch_of_the_wrong_shape_is_one_line(tmp_path, batch, expected):
    write_cifar(tmp_path, "cifar10", per_class=1)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    write_python2_pickle(path, batch)
    with pytest.raises(UserInputError, match=expected) as error:
        read_cifar("cifar10", tmp_path, train=False)
    assert _one_line(error).startswith(f"{path}: ")


def test_a_python_3_pickle_is_refused_unread(tmp_path):
    write_cifar(tmp_path, "cifar10", per_class=1)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(pickle.dumps({"data": np.zeros((1, 3072), np.uint8), "labels": [0]}, 4))
    with pytest.raises(UserInputError, match="holds the opcode FRAME, which a CIFAR batch never"):
        read_cifar("cifar10", tmp_path, train=False)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        # a million nested tuples: hashing one overflows the C stack
        (b"\x80\x02)" + b"\x85" * 10**6 + b"}q\x01(h\x01K\x00s.", "more than 1,000 containers"),
        # memo index 2**32 - 1: the C unpickler would size its memo to gigabytes first
        (b"\x80\x02Nr\xff\xff\xff\xff.", r"memo index 4,294,967,295"),
        (b"\x80\x02N2.", "holds the opcode DUP"),  # one byte, one more reference
    ],
    ids=["nesting", "memo", "dup"],
)
def test_a_pickle_built_to_exhaust_the_reader_is_refused_before_it_is_unpickled(
    tmp_path, data, expected
):
    write_cifar(tmp_path, "cifar10", per_class=1)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(data)
    with pytest.raises(UserInputError, match=expected) as error:
        read_cifar("cifar10", tmp_path, train=False)
    assert _one_line(error).startswith(f"{path}: ")


def test_damaged_batches_read_or_fail_in_one_line(tmp_path):
    write_cifar(tmp_path, "cifar10", per_class=1)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    good = path.read_bytes()
    rng = np.random.default_rng(0)
    for _ in range(300):
        data = bytearray(good)
        for _ in range(int(rng.integers(1, 4))):  # mostly in the structure, before the pixels
            data[int(rng.integers(0, 200 if rng.random() < 0.8 else len(data)))] = rng.integers(256)
        path.write_bytes(bytes(data))
        try:
            read_cifar("cifar10", tmp_path, train=False)
        except UserInputError as error:
            assert "\n" not in str(error) and str(error).startswith(f"{path}: ")


def test_a_file_over_the_bound_is_refused_before_it_is_unpickled(tmp_path, monkeypatch):
    write_cifar(tmp_path, "cifar100", per_class=1)
    monkeypatch.setattr(cifar_files, "MAX_BATCH_BYTES", 1000)
    with pytest.raises(UserInputError, match="cifar-100-python/test: the file is larger than"):
        read_cifar("cifar100", tmp_path, train=False)


@pytest.mark.parametrize("name", sorted(CIFAR_LAYOUTS))
def test_a_missing_folder_says_how_to_fetch_it(tmp_path, name):
    folder = CIFAR_LAYOUTS[name].folder
    with pytest.raises(UserInputError, match=f"holding {name} \\({folder}/\\).*download=True"):
        load_split(name, "test", root=tmp_path)


def test_a_missing_batch_is_named_with_how_to_fetch_it(tmp_path):
    write_cifar(tmp_path, "cifar10", per_class=1)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(UserInputError) as error:
        load_split("cifar10", "val", root=tmp_path)
    message = _one_line(error)
    assert message.startswith(f"'{tmp_path}/cifar-10-batches-py/data_batch_4' is missing. ")
    assert "download=True" in message


def test_meta_without_the_class_names_is_one_line(tmp_path):
    write_cifar(tmp_path, "cifar100", per_class=1)
    meta = tmp_path / "cifar-100-python" / "meta"
    write_python2_pickle(meta, {b"fine_label_names": [b"apple"]})
    with pytest.raises(UserInputError, match="a list of 100 class names, but got a list of 1"):
        read_cifar_classes("cifar100", tmp_path)
