"""Safe reading of weights files: ``.safetensors`` checked against its header before any tensor
is read, torch zip archives with ``weights_only=True``; a pickle is refused, never unpickled."""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainables.errors import must
from trainables.numbers import is_integer
from trainables.readers.files import BadFile, is_file, refused_setting

if TYPE_CHECKING:
    import torch

#: safetensors' own bound on its JSON header.
MAX_SAFETENSORS_HEADER = 100_000_000

_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTOCOL = 0x80  # the first byte of a pickle of protocol 2 or later
_SAFETENSORS_DTYPES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "F8_E8M0": 1,
    "U16": 2,
    "I16": 2,
    "F16": 2,
    "BF16": 2,
    "U32": 4,
    "I32": 4,
    "F32": 4,
    "U64": 8,
    "I64": 8,
    "F64": 8,
}
_WEIGHTS = "a weights file (.safetensors, or a .pt/.pth/.bin torch zip archive of tensors)"


class _Refused(Exception):
    """A weights file that is not what it should be; the message says why."""


def _safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file, checked against the file's size; no tensor read.

    Layout: an 8-byte little-endian header length N, N bytes of JSON naming every tensor's
    dtype, shape and byte range, then the tensors' bytes, covered exactly by those ranges.
    """
    not_safetensors = "not a valid safetensors file"
    try:
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            if size < 8:
                raise _Refused(f"{not_safetensors} (only {size} bytes)")
            (length,) = struct.unpack("<Q", file.read(8))
            if length > min(size - 8, MAX_SAFETENSORS_HEADER):
                raise _Refused(
                    f"{not_safetensors} (its header length {length:,} does not fit the file's "
                    f"{size:,} bytes)"
                )
            raw = file.read(length)
    except OSError as error:
        raise _Refused(f"the file cannot be read ({error.strerror})") from None
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_pairs)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _Refused(f"{not_safetensors} (its header is not a JSON object)") from None
    if not isinstance(header, dict):
        raise _Refused(f"{not_safetensors} (its header is not a JSON object)")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(
        isinstance(value, str) for value in metadata.values()
    ):
        raise _Refused(f"{not_safetensors} (its __metadata__ is not a mapping of strings)")
    ranges = []
    for name, entry in header.items():
        shown = name if len(name) <= 80 else name[:77] + "..."
        if not isinstance(entry, dict):
            raise _Refused(f"{not_safetensors} (tensor `{shown}` is not described)")
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if dtype not in _SAFETENSORS_DTYPES:
            raise _Refused(f"{not_safetensors} (tensor `{shown}` has an unknown dtype)")
        if not _int_list(shape) or not _int_list(offsets) or len(offsets) != 2:
            raise _Refused(f"{not_safetensors} (tensor `{shown}` has a bad shape or byte range)")
        begin, end = offsets
        if end < begin or end - begin != math.prod(shape) * _SAFETENSORS_DTYPES[dtype]:
            raise _Refused(f"{not_safetensors} (tensor `{shown}` does not match its byte range)")
        ranges.append((begin, end))
    covered = 0
    for begin, end in sorted(ranges):
        if begin != covered:
            raise _Refused(f"{not_safetensors} (its tensors overlap or leave gaps)")
        covered = end
    if covered != size - 8 - length:
        raise _Refused(
            f"{not_safetensors} (its tensors cover {covered:,} bytes but the file holds "
            f"{size - 8 - length:,}: truncated or padded)"
        )
    return header


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("a name is given twice")
    return result


def _int_list(value: Any) -> bool:
    return isinstance(value, list) and all(is_integer(item) and item >= 0 for item in value)


def _safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    _safetensors_header(path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, RuntimeError, ValueError) as error:
        reason = " ".join(str(error).split())[:200]
        raise _Refused(f"not a valid safetensors file ({reason})") from None


def _torch_archive(path: Path, map_location: Any) -> Any:
    """``torch.load(..., weights_only=True)`` of a torch zip archive; a pickle is refused unread."""
    import pickle

    import torch

    try:
        with open(path, "rb") as file:
            start = file.read(4)
    except OSError as error:
        raise _Refused(f"the file cannot be read ({error.strerror})") from None
    if start[:1] == bytes([_PICKLE_PROTOCOL]):
        raise _Refused(
            "a pickle file (torch's format before 1.6, or a plain pickle), which is not read "
            "because unpickling can run code; save the tensors as .safetensors or with a "
            "current torch.save"
        )
    if start != _ZIP_MAGIC:
        raise _Refused("not a torch file (a torch.save zip archive starts with PK)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:  # torch's own message suggests unsafe ways to load it
        raise _Refused(
            "holds Python objects other than tensors and plain containers, which are not "
            "unpickled because that can run code; save only the tensors"
        ) from None
    except Exception as error:  # noqa: BLE001 - a damaged archive fails in many ways
        lines = str(error).strip().splitlines() or [""]
        first = lines[0].split(". ")[0]  # torch follows its reason with advice
        if not first or "weights_only" in first or len(first) > 200:
            first = type(error).__name__
        raise _Refused(f"a damaged torch archive ({first})") from None


def _state_dict(obj: Any) -> dict[str, torch.Tensor]:
    import torch

    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]  # training checkpoints keep the weights under this key
    if not isinstance(obj, dict) or not obj:
        raise _Refused("does not hold a state dict (a mapping of names to tensors)")
    for name, value in obj.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise _Refused(f"entry {str(name)[:80]!r} of its state dict is not a tensor")
    return obj


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file, its header checked against the file first."""
    try:
        return _safetensors(path)
    except _Refused as refused:
        raise BadFile(f"{path}: {refused}.") from None


def load_torch_file(path: Path, *, map_location: Any = "cpu") -> Any:
    """A torch zip archive (``torch.save``) read with ``weights_only=True``: tensors and plain
    containers only. A pickle file (torch's legacy format) is refused without being read."""
    try:
        return _torch_archive(path, map_location)
    except _Refused as refused:
        raise BadFile(f"{path}: {refused}.") from None


def load_weights_file(path: Path) -> dict[str, torch.Tensor]:
    """The state dict in a ``.safetensors`` file or a torch zip archive (a plain state dict, or
    a checkpoint holding one under ``state_dict``)."""
    try:
        if path.suffix.lower() == ".safetensors":
            return _safetensors(path)
        return _state_dict(_torch_archive(path, "cpu"))
    except _Refused as refused:
        raise BadFile(f"{path}: {refused}.") from None


def check_weights_file(path: Path, field: str) -> None:
    """Check that ``path`` is a weights file the project reads, without running any of its code.

    A ``.safetensors`` file has its header parsed and checked against the file's size (no tensor
    is read); any other file must be a torch zip archive of a state dict, loaded with
    ``weights_only=True``. Raises one line for ``field`` (such as ``model.pretrained``).
    """
    path = Path(path)
    if not is_file(path):
        raise must(field, f"an existing {_WEIGHTS.removeprefix('a ')}", str(path))
    try:
        if path.suffix.lower() == ".safetensors":
            _safetensors_header(path)
        else:
            _state_dict(_torch_archive(path, "cpu"))
    except _Refused as refused:
        raise refused_setting(field, _WEIGHTS, path, str(refused)) from None
