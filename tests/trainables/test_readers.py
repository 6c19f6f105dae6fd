"""The bounded readers: each bad input first, then property tests over generated files.

Every test writes the bad input, reads it through the public entry point that meets it in use
(a tree file, a model folder, an image to predict, a weights file) and checks the contract: one
:class:`~trainables.errors.UserInputError` line that names the file, and nothing else.
"""

from __future__ import annotations

import base64
import io
import json
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from tests.fuzz_text import csv_documents, fuzz_settings, json_documents, yaml_documents
from trainables.errors import UserInputError
from trainables.hierarchy import ClassTree, Forest, load, read_parent_table
from trainables.readers import (
    MAX_DEPTH,
    MAX_TEXT_BYTES,
    MAX_YAML_NODES,
    RepeatedKey,
    StrictLoader,
    YamlRefused,
    check_weights_file,
    load_json,
    load_safetensors,
    load_torch_file,
    load_weights_file,
    load_yaml,
    open_image,
    read_json,
    read_text,
)

FUZZ = fuzz_settings(150)


def _one_line(error: pytest.ExceptionInfo, path: Path | str | None = None) -> str:
    message = str(error.value)
    assert message and "\n" not in message and "\r" not in message, message
    assert "PosixPath(" not in message and "weights_only=False" not in message, message
    if path is not None:
        assert str(path) in message, message
    return message


def _files(folder: Path) -> set[Path]:
    return set(folder.rglob("*"))


# -- text -------------------------------------------------------------------------------------


#: A small tree: (child, parent) pairs, two levels above the leaves circle, oval and square.
PAIRS = [("circle", "round"), ("oval", "round"), ("square", "angular")]
PAIRS += [("round", "shape"), ("angular", "shape")]


def test_a_csv_tree_saved_with_a_byte_order_mark_loads(tmp_path):
    path = tmp_path / "shapes.csv"
    rows = "".join(f"{child},{parent}\r\n" for child, parent in PAIRS)
    path.write_bytes(b"\xef\xbb\xbfchild,parent\r\n" + rows.encode())
    assert read_parent_table(path) == PAIRS
    assert load(path).leaves == ("circle", "oval", "square")


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("t.yaml", "".join(f"{child}: {parent}\n" for child, parent in PAIRS)),
        ("t.json", json.dumps(dict(PAIRS))),
    ],
)
def test_yaml_and_json_trees_with_a_byte_order_mark_load(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(b"\xef\xbb\xbf" + content.encode())
    assert read_parent_table(path) == PAIRS


def test_a_file_past_the_size_cap_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "huge.yaml"
    with open(path, "wb") as file:
        file.truncate(MAX_TEXT_BYTES + 1)  # sparse: costs nothing to write
    with pytest.raises(UserInputError) as caught:
        load(path)
    assert "the file is larger than 16 MiB" in _one_line(caught, path)
    small = tmp_path / "small.txt"
    small.write_text("x" * 11)
    with pytest.raises(UserInputError, match="larger than 10 bytes"):
        read_text(small, max_bytes=10)


def test_text_that_is_not_utf8_or_not_readable(tmp_path):
    path = tmp_path / "latin.yaml"
    path.write_bytes("enfant: b\xe9b\xe9\n".encode("latin-1"))
    with pytest.raises(UserInputError) as caught:
        load(path)
    assert "not UTF-8 text (at byte 9)" in _one_line(caught, path)
    with pytest.raises(UserInputError) as caught:
        read_text(tmp_path)  # a folder
    assert "the file cannot be read" in _one_line(caught, tmp_path)


def test_windows_and_old_mac_line_endings(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(b"child,parent\r\na,X\rb,X\n")
    assert read_text(path) == "child,parent\na,X\nb,X\n"
    assert read_parent_table(path) == [("a", "X"), ("b", "X")]


# -- YAML -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("? [a, b]\n: 1\n", "a list is used as a key at line 1"),
        ("{[a]: 1}\n", "a list is used as a key at line 1"),
        ("x: {? {a: 1}: 2}\n", "a mapping is used as a key at line 1"),
        ("a: &k [x]\nb: {*k : 1}\n", "a list is used as a key"),
        ("a: &a [*a]\n", "refers to its own anchor"),
        ("a: 1" + ":0" * 5_000 + "\n", "integers of at most 100 characters"),
        ("a: 2020-13-45\n", "not valid YAML (a value cannot be built: month must be in 1..12)"),
        ("a: !!bool 3\n", "not valid YAML (a value cannot be built: its text does not fit"),
        ("a: !!int ''\n", "not valid YAML (a value cannot be built: its text does not fit"),
        ("a: !!timestamp 2001\n", "(a value cannot be built: its text does not fit its tag)"),
        ("a: " + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1) + "\n", "nested at most 100"),
        ("a: " + "{a: " * 5_000 + "1" + "}" * 5_000 + "\n", "nested at most 100"),
    ],
)
def test_yaml_past_the_bounds_is_one_line_naming_the_file(tmp_path, content, fragment):
    path = tmp_path / "tree.yaml"
    path.write_text(content)
    with pytest.raises(UserInputError) as caught:
        load(path)
    assert fragment in _one_line(caught, path)


def test_yaml_within_the_bounds_is_built():
    deepest = "[" * MAX_DEPTH + "1" + "]" * MAX_DEPTH
    value = load_yaml(deepest)
    for _ in range(MAX_DEPTH):
        value = value[0]
    assert value == 1
    assert load_yaml("d: &d {lr: 1}\ne: {<<: *d, x: *d}\n") == {
        "d": {"lr": 1},
        "e": {"lr": 1, "x": {"lr": 1}},
    }
    assert load_yaml("? !!binary aGk=\n: 1\n") == {b"hi": 1}  # a scalar key of any type
    assert load_yaml("\ufeffa: 1\n") == {"a": 1}
    assert load_yaml("# only a comment\n") is None


def test_an_alias_bomb_is_refused_in_milliseconds():
    import time

    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 12)]
    started = time.perf_counter()
    with pytest.raises(YamlRefused) as caught:
        load_yaml("\n".join(lines))
    assert time.perf_counter() - started < 1
    assert caught.value.constraint == f"that expands to at most {MAX_YAML_NODES:,} nodes"


# -- JSON -------------------------------------------------------------------------------------


def test_json_nested_twenty_thousand_deep_is_one_line(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 20_000 + "]" * 20_000)
    with pytest.raises(UserInputError) as caught:
        load(path)
    assert f"the JSON must be nested at most {MAX_DEPTH} levels deep" in _one_line(caught, path)
    path.write_text("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))  # within Python's own limit
    with pytest.raises(UserInputError, match="nested at most"):
        read_json(path)


def test_json_repeated_keys_huge_numbers_and_emptiness(tmp_path):
    path = tmp_path / "t.json"
    path.write_text('{"a": "X", "b": "X", "a": "Y"}')
    with pytest.raises(UserInputError) as caught:
        load(path)
    assert "child `a` is listed twice" in _one_line(caught, path)
    path.write_text('{"a": ' + "1" * 5_000 + "}")
    with pytest.raises(UserInputError) as caught:
        read_json(path)
    assert "not valid JSON (Exceeds the limit (4300 digits)" in _one_line(caught, path)
    with pytest.raises(UserInputError, match="t.json: the file is empty"):
        load_json("\ufeff  ", "t.json")


# -- CSV --------------------------------------------------------------------------------------


def test_a_csv_field_over_the_limit_is_one_line(tmp_path):
    path = tmp_path / "big.csv"
    path.write_text("child,parent\n" + "a" * 200_000 + ",b\n")
    with pytest.raises(UserInputError) as caught:
        load(path)
    assert "not valid CSV (field larger than field limit (131072), line 2)" in _one_line(
        caught, path
    )


@pytest.mark.parametrize(
    ("content", "fragment"),
    [(",\n,,\n", "the file is empty"), ('child,parent\n"a,b\n', "row 2 must be two")],
)
def test_csv_with_only_separators_or_an_open_quote(tmp_path, content, fragment):
    path = tmp_path / "t.csv"
    path.write_text(content)
    with pytest.raises(UserInputError) as caught:
        load(path)
    assert fragment in _one_line(caught, path)


# -- images -----------------------------------------------------------------------------------


def _png(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` pixels and holds none (only its header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def _image_bytes(fmt: str = "PNG", size: int = 48) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def test_a_truncated_png_to_predict_is_one_line_naming_the_file(tmp_path):
    from raysearch.serving import images_from_input

    path = tmp_path / "cut.png"
    data = _image_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserInputError) as caught:
        images_from_input([str(path)], 32)
    message = _one_line(caught, path)
    assert message.startswith("`image` must be a readable image (PNG, JPEG, ...), but got <")
    assert "damaged or truncated" in message


@pytest.mark.parametrize(
    ("side", "shown"), [(20_000, "400,000,000 pixels"), (9_000, "9000 x 9000")]
)
def test_an_image_past_the_pixel_cap_is_one_line_naming_the_file(tmp_path, side, shown):
    from raysearch.serving import images_from_input

    path = tmp_path / "huge.png"
    path.write_bytes(_png(side, side))
    with pytest.raises(UserInputError) as caught:
        images_from_input([str(path)], 32)
    message = _one_line(caught, path)
    assert message.startswith("`image` must be an image of at most 67,108,864 pixels")
    assert shown in message


def test_images_as_files_bytes_and_long_base64(tmp_path):
    from raysearch.serving import images_from_input

    data = _image_bytes(size=256)  # base64 of it is longer than a file name may be
    path = tmp_path / "ok.png"
    path.write_bytes(data)
    cells = [str(path), data, base64.b64encode(data).decode()]
    images = images_from_input(cells, 32)
    assert images.shape == (3, 3, 32, 32)
    assert torch.equal(images[0], images[1]) and torch.equal(images[0], images[2])
    with pytest.raises(UserInputError) as caught:
        images_from_input([b"not an image"], 32)
    assert "<12 bytes: not an image format PIL knows>" in _one_line(caught)


# -- weights ----------------------------------------------------------------------------------


def _safetensors(path: Path) -> bytes:
    from safetensors.torch import save_file

    save_file({"w": torch.arange(12.0).view(3, 4), "b": torch.zeros(2)}, str(path))
    return path.read_bytes()


def _corrupt_safetensors(good: bytes) -> dict[str, bytes]:
    return {
        "random": np.random.default_rng(0).bytes(1000),
        "truncated": good[:-5],
        "bogus header length": struct.pack("<Q", 10**12) + good[8:],
        "header not JSON": struct.pack("<Q", 10) + b"{not json}" + b"\0" * 8,
        "tiny": b"\x01\x02",
    }


def test_corrupt_safetensors_are_one_line_naming_the_file(tmp_path):
    good = _safetensors(tmp_path / "good.safetensors")
    assert set(load_safetensors(tmp_path / "good.safetensors")) == {"w", "b"}
    for name, data in _corrupt_safetensors(good).items():
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(data)
        for read in (load_safetensors, load_weights_file):
            with pytest.raises(UserInputError) as caught:
                read(path)
            assert "not a valid safetensors file" in _one_line(caught, path), name
        with pytest.raises(UserInputError) as caught:
            check_weights_file(path, "model.pretrained")
        assert _one_line(caught, path).startswith("`model.pretrained` must be a weights file")


class _RunsCode:
    """Unpickling this calls ``Path.touch``: evidence that a file's code ran."""

    def __init__(self, witness: Path) -> None:
        self.witness = witness

    def __reduce__(self):
        return (Path.touch, (self.witness,))


def test_pickles_are_refused_without_running_them(tmp_path):
    witness = tmp_path / "code-ran"
    state = {"w": torch.ones(2)}
    legacy = tmp_path / "legacy.pt"
    torch.save(state, legacy, _use_new_zipfile_serialization=False)
    plain = tmp_path / "plain.bin"
    plain.write_bytes(pickle.dumps({"w": _RunsCode(witness)}))
    archived = tmp_path / "archived.pt"
    torch.save({"w": _RunsCode(witness)}, archived)
    expected = {
        legacy: "a pickle file",
        plain: "a pickle file",
        archived: "holds Python objects other than tensors",
    }
    for path, fragment in expected.items():
        for read in (load_torch_file, load_weights_file):
            with pytest.raises(UserInputError) as caught:
                read(path)
            message = _one_line(caught, path)
            assert fragment in message and "weights_only" not in message, message
        with pytest.raises(UserInputError) as caught:
            check_weights_file(path, "model.pretrained")
        assert fragment in _one_line(caught, path)
    assert not witness.exists()


def test_torch_archives_are_read_with_weights_only(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "epoch": 3}, good)
    assert load_torch_file(good)["epoch"] == 3
    assert set(load_weights_file(good)) == {"w"}
    check_weights_file(good, "model.pretrained")
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:-40])
    not_torch = tmp_path / "notes.bin"
    not_torch.write_text("some notes")
    not_weights = tmp_path / "numbers.pt"
    torch.save([1, 2, 3], not_weights)
    expected = {
        cut: "a damaged torch archive (PytorchStreamReader failed reading zip archive",
        not_torch: "not a torch file",
    }
    for path, fragment in expected.items():
        with pytest.raises(UserInputError) as caught:
            load_torch_file(path)
        assert fragment in _one_line(caught, path)
    with pytest.raises(UserInputError) as caught:
        load_weights_file(not_weights)
    assert "does not hold a state dict" in _one_line(caught, not_weights)
    with pytest.raises(UserInputError) as caught:
        check_weights_file(tmp_path / "absent.pt", "model.pretrained")
    assert _one_line(caught).startswith("`model.pretrained` must be an existing weights file")


def test_check_weights_file_reads_no_tensor_of_a_safetensors_file(tmp_path, monkeypatch):
    import safetensors.torch

    _safetensors(tmp_path / "good.safetensors")

    def refuse(*args, **kwargs):
        raise AssertionError("tensors were read")

    monkeypatch.setattr(safetensors.torch, "load_file", refuse)
    check_weights_file(tmp_path / "good.safetensors", "model.pretrained")


def test_a_checkpoint_pickled_by_an_older_torch_is_refused(tmp_path):
    from trainables.checkpoints import STATE_FILE

    path = tmp_path / STATE_FILE
    torch.save({"model": {}, "epoch": 0}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(UserInputError) as caught:
        load_torch_file(path)
    assert "a pickle file" in _one_line(caught, path)


def _package(folder: Path) -> Path:
    from raysearch.config import config_to_dict, load_config
    from raysearch.model_package import CONFIG_FILE, FORMAT, META_FILE, TREES_FILE
    from trainables.backbone import EMBEDDED_ARCH
    from trainables.hierarchy.shipped import load_shipped
    from trainables.hierarchy.tree_dicts import forest_to_dict

    folder.mkdir()
    meta = {"format": FORMAT, "architecture": EMBEDDED_ARCH, "quick_gelu": False}
    (folder / META_FILE).write_text(json.dumps(meta))
    (folder / CONFIG_FILE).write_text(json.dumps(config_to_dict(load_config(None))))
    (folder / TREES_FILE).write_text(json.dumps(forest_to_dict(load_shipped("embedded"))))
    return folder


def test_a_model_folder_with_damaged_files_is_one_line_naming_them(tmp_path):
    from raysearch.model_package import (
        CONFIG_FILE,
        META_FILE,
        TREES_FILE,
        WEIGHTS_FILE,
        load_classifier,
    )

    folder = _package(tmp_path / "model")
    good = _safetensors(tmp_path / "other.safetensors")  # valid, but not this model's weights
    damaged = {WEIGHTS_FILE: None, **_corrupt_safetensors(good)}
    for data in damaged.values():
        weights = folder / WEIGHTS_FILE
        weights.write_bytes(good if data is None else data)
        with pytest.raises(UserInputError) as caught:
            load_classifier(folder)
        message = _one_line(caught, weights)
        assert ("do not fit the model" if data is None else "not a valid safetensors") in message
    for name, content in [(META_FILE, "{"), (CONFIG_FILE, "[" * 5_000), (TREES_FILE, "3")]:
        fresh = _package(tmp_path / f"model-{name}")
        (fresh / name).write_text(content)
        with pytest.raises(UserInputError) as caught:
            load_classifier(fresh)
        _one_line(caught, fresh / name)


def test_a_damaged_base_model_cache_entry_says_which_folder_to_delete(tmp_path, monkeypatch):
    from trainables import pretrain

    entry = tmp_path / "base-0123"
    entry.mkdir()
    (entry / pretrain.WEIGHTS_FILE).write_bytes(b"\x00" * 100)
    monkeypatch.setattr(pretrain, "base_model_dir", lambda *args: entry)
    with pytest.raises(UserInputError) as caught:
        pretrain.load_or_pretrain_base()
    message = _one_line(caught, entry / pretrain.WEIGHTS_FILE)
    assert "the cached base model is damaged" in message
    assert f"delete the folder {entry} and it is built again" in message


# -- property tests ---------------------------------------------------------------------------


def _contract(read, folder: Path, path: Path) -> object | None:
    """``read()`` returns a value or raises one UserInputError line; it writes no file."""
    before = _files(folder)
    try:
        return read()
    except UserInputError as error:
        message = str(error)
        assert message and "\n" not in message and "PosixPath(" not in message, message
        assert str(path) in message or message.startswith("`file` must"), message
        assert f"{path}: {path}" not in message, message  # named once
        return None
    finally:
        assert _files(folder) == before


@FUZZ
@given(text=yaml_documents(), suffix=st.sampled_from([".yaml", ".yml"]))
def test_tree_yaml_files_meet_the_contract(tmp_path, text, suffix):
    path = tmp_path / f"tree{suffix}"
    path.write_text(text, encoding="utf-8", newline="")
    result = _contract(lambda: load(path), tmp_path, path)
    assert result is None or isinstance(result, ClassTree | Forest)
    _contract(lambda: read_parent_table(path), tmp_path, path)


@FUZZ
@given(text=json_documents())
def test_tree_json_files_meet_the_contract(tmp_path, text):
    path = tmp_path / "tree.json"
    path.write_text(text, encoding="utf-8", newline="")
    result = _contract(lambda: load(path), tmp_path, path)
    assert result is None or isinstance(result, ClassTree | Forest)


@FUZZ
@given(text=csv_documents())
def test_tree_csv_files_meet_the_contract(tmp_path, text):
    path = tmp_path / "tree.csv"
    path.write_text(text, encoding="utf-8", newline="")
    result = _contract(lambda: load(path), tmp_path, path)
    assert result is None or isinstance(result, ClassTree)


@FUZZ
@given(raw=st.binary(max_size=64), cut=st.integers(0, 64))
def test_tree_files_of_any_bytes_meet_the_contract(tmp_path, raw, cut):
    for suffix in (".yaml", ".json", ".csv"):
        path = tmp_path / f"tree{suffix}"
        path.write_bytes(b"\xef\xbb\xbf"[: cut % 4] + raw)
        _contract(lambda path=path: load(path), tmp_path, path)


def _mutations(data: bytes) -> st.SearchStrategy[bytes]:
    """``data`` with a few bytes changed, cut short, or both."""
    edits = st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(0, 255)), max_size=4)

    def apply(args) -> bytes:
        changes, keep = args
        mutated = bytearray(data)
        for position, value in changes:
            mutated[position] = value
        return bytes(mutated[:keep])

    return st.tuples(edits, st.integers(0, len(data))).map(apply)


_IMAGES = {fmt: _image_bytes(fmt, size=16) for fmt in ("PNG", "JPEG", "GIF", "BMP", "TIFF")}


@FUZZ
@given(data=st.sampled_from(sorted(_IMAGES)).flatmap(lambda fmt: _mutations(_IMAGES[fmt])))
def test_damaged_images_meet_the_contract(data):
    try:
        image = open_image(data, "fuzz.img", field="image")
    except UserInputError as error:
        assert "\n" not in str(error) and "fuzz.img" in str(error)
    else:
        assert image.mode == "RGB"


def _weights_bytes() -> dict[str, bytes]:
    from safetensors.torch import save

    buffer = io.BytesIO()
    torch.save({"w": torch.ones(3), "b": torch.zeros(2, 2)}, buffer)
    return {
        ".safetensors": save({"w": torch.ones(3), "b": torch.zeros(2, 2)}),
        ".pt": buffer.getvalue(),
    }


_WEIGHTS = _weights_bytes()


@FUZZ
@given(
    case=st.sampled_from(sorted(_WEIGHTS)).flatmap(
        lambda suffix: st.tuples(st.just(suffix), _mutations(_WEIGHTS[suffix]))
    )
)
def test_damaged_weights_files_meet_the_contract(tmp_path, case):
    suffix, data = case
    path = tmp_path / f"weights{suffix}"
    path.write_bytes(data)
    state = _contract(lambda: load_weights_file(path), tmp_path, path)
    checked = _contract(
        lambda: check_weights_file(path, "model.pretrained") or True, tmp_path, path
    )
    # The check accepts exactly what loads, without reading a tensor of a .safetensors file.
    assert (state is not None) == (checked is not None)
    assert state is None or all(isinstance(value, torch.Tensor) for value in state.values())


@FUZZ
@given(text=yaml_documents(), loader=st.sampled_from([yaml.SafeLoader, StrictLoader]))
def test_yaml_parsing_is_a_value_or_a_refusal(text, loader):
    try:
        load_yaml(text, loader)
    except (YamlRefused, yaml.YAMLError, RepeatedKey):
        pass


def test_the_yaml_loader_refuses_a_repeated_key_and_names_its_line():
    with pytest.raises(RepeatedKey) as caught:
        load_yaml("a: 1\nb: {c: 2}\na: 3\n")
    assert (caught.value.key, caught.value.first, caught.value.second) == ("a", 1, 3)
    assert caught.value.line == 3
    with pytest.raises(RepeatedKey):
        load_yaml("outer:\n  c: 1\n  c: 1\n")  # the same value twice is still refused


def test_the_yaml_loader_lets_a_mapping_override_merged_keys():
    text = "base: &b {lr: 1, wd: 2}\nrun:\n  <<: *b\n  lr: 5\n"
    assert load_yaml(text)["run"] == {"lr": 5, "wd": 2}


@pytest.mark.parametrize("text", ["1e-3", "2E5", "-1.5e+2", "3.e1"])
def test_the_yaml_loader_reads_exponents_without_a_dot_as_numbers(text):
    assert load_yaml(text) == float(text)
