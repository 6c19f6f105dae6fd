"""Bounded readers for untrusted user files: text, YAML, JSON, CSV, images and weights.

Every file a user hands the project (configs, search spaces, class trees, model folders, images,
weights) is read here, with explicit bounds on what reading it may cost:

* text: at most :data:`MAX_TEXT_BYTES`, UTF-8, a leading byte order mark dropped (spreadsheets
  write one);
* YAML: at most :data:`MAX_YAML_NODES` nodes once aliases are expanded, nested at most
  :data:`MAX_DEPTH` levels, keys plain scalars, integers at most :data:`MAX_NUMBER_CHARS`
  characters; all checked on the composed node graph before any object is built;
* JSON: nested at most :data:`MAX_DEPTH` levels;
* CSV: fields of at most 128 KiB (the csv module's own limit, kept);
* images: at most :data:`MAX_IMAGE_BYTES` and :data:`MAX_IMAGE_PIXELS`, decoded completely;
* weights: ``.safetensors`` (header checked against the file before any tensor is read) or a
  torch zip archive read with ``weights_only=True``; pickle files are refused, never unpickled.

A problem raises :class:`BadFile` (a :class:`~trainables.errors.UserInputError`) with one line
that starts with the file's name (images and :func:`check_weights_file`: the setting's name),
except :func:`load_yaml`, which parses text that has no file of its own (an override) and
raises :class:`YamlRefused` or ``yaml.YAMLError`` for its caller to phrase.

Importing this module is cheap: torch, PIL and safetensors are imported on first use.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import struct
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from trainables.errors import UserInputError, must
from trainables.numbers import is_integer

if TYPE_CHECKING:
    import torch
    from PIL import Image

__all__ = [
    "RepeatedKey",
    "StrictLoader",
    "MAX_DEPTH",
    "MAX_IMAGE_BYTES",
    "MAX_IMAGE_PIXELS",
    "MAX_NUMBER_CHARS",
    "MAX_TEXT_BYTES",
    "MAX_YAML_NODES",
    "BadFile",
    "YamlRefused",
    "check_weights_file",
    "exists",
    "expanded",
    "is_file",
    "load_json",
    "load_safetensors",
    "load_torch_file",
    "load_weights_file",
    "load_yaml",
    "open_image",
    "parse_csv",
    "read_bytes",
    "read_json",
    "read_text",
    "read_yaml",
    "yaml_reason",
]

#: The largest text file read (configs, search spaces, class trees, model folders' JSON). The
#: biggest real one, a WordNet tree of thousands of classes, is a few MiB.
MAX_TEXT_BYTES = 16 * 2**20
#: The most nodes a YAML document may expand to once its aliases are resolved. A real config or
#: tree has at most thousands; a "billion laughs" file (aliases of aliases) expands to billions
#: from a few lines, and building it would take minutes and gigabytes.
MAX_YAML_NODES = 100_000
#: The deepest nesting of lists and mappings in YAML or JSON. Real files nest a handful of
#: levels; the bound keeps every later recursive walk of the data far from Python's own limit.
MAX_DEPTH = 100
#: The longest YAML integer. Base-60 integers (``1:30:00``) are converted in quadratic time, so
#: one long enough stalls the parser for hours; no setting needs more than a few digits.
MAX_NUMBER_CHARS = 100
#: The largest image file read.
MAX_IMAGE_BYTES = 256 * 2**20
#: The most pixels an image may decode to (8192 x 8192; 256 MiB as RGBA). PIL's own guard only
#: warns below twice its limit; this one is explicit and lower.
MAX_IMAGE_PIXELS = 8192 * 8192
#: safetensors' own bound on its JSON header.
MAX_SAFETENSORS_HEADER = 100_000_000

_BOM = "\ufeff"
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


def _refused(field: str, constraint: str, where: str | Path, detail: str) -> UserInputError:
    """The standard message with ``<where: detail>`` as the value, never shortened (``must``
    shortens long values; here the file's name and the reason are both needed)."""
    return UserInputError(f"`{field}` must be {constraint}, but got <{where}: {detail}>.")


class BadFile(UserInputError):
    """A user file that cannot be read as what it should be; the line starts with its name."""


# -- text -------------------------------------------------------------------------------------


def expanded(path: str | Path) -> Path:
    """``path`` with ``~`` expanded; as given when it names an unknown ``~user``."""
    try:
        return Path(path).expanduser()
    except RuntimeError:
        return Path(path)


def exists(path: str | Path) -> bool:
    """Whether anything exists at ``path``; False, not an error, for a name the system refuses."""
    try:
        return Path(path).exists()
    except (OSError, ValueError):
        return False


def is_file(path: str | Path) -> bool:
    """Whether ``path`` names an existing file; False, not an error, for a name the system
    refuses (longer than it allows, a NUL byte)."""
    try:
        return Path(path).is_file()
    except (OSError, ValueError):
        return False


def read_bytes(path: Path, *, max_bytes: int = MAX_TEXT_BYTES) -> bytes:
    """The bytes of ``path``; one line naming the file if it is missing, unreadable or larger
    than ``max_bytes``."""
    try:
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            if size > max_bytes:
                raise _too_large(path, size, max_bytes)
            data = file.read(max_bytes + 1)  # a file that grows while read is cut here
    except OSError as error:
        raise BadFile(f"{path}: the file cannot be read ({error.strerror}).") from None
    if len(data) > max_bytes:
        raise _too_large(path, len(data), max_bytes)
    return data


def _too_large(path: Path, size: int, max_bytes: int) -> BadFile:
    limit = f"{max_bytes // 2**20} MiB" if max_bytes >= 2**20 else f"{max_bytes:,} bytes"
    return BadFile(f"{path}: the file is larger than {limit} ({size:,} bytes).")


def read_text(path: Path, *, max_bytes: int = MAX_TEXT_BYTES) -> str:
    """The UTF-8 text of ``path`` without a leading byte order mark (bounded by ``max_bytes``)."""
    data = read_bytes(path, max_bytes=max_bytes)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise BadFile(f"{path}: the file is not UTF-8 text (at byte {error.start:,}).") from None
    # Universal newlines, as Path.read_text gives them: a file saved on Windows reads the same.
    return text.removeprefix(_BOM).replace("\r\n", "\n").replace("\r", "\n")


# -- YAML -------------------------------------------------------------------------------------


class RepeatedKey(Exception):
    """A key given twice in one YAML mapping (YAML requires keys to be unique; PyYAML keeps the
    last silently). ``first`` and ``second`` are the two values, ``line`` the second's line."""

    def __init__(self, key: Any, first: Any, second: Any, line: int) -> None:
        super().__init__(key)
        self.key, self.first, self.second, self.line = key, first, second, line


class StrictLoader(yaml.SafeLoader):
    """The one YAML loader of raysearch's files: ``yaml.SafeLoader`` that refuses a key repeated
    within one mapping (:class:`RepeatedKey`) and reads ``1e-3`` as a number."""


def _unique_mapping(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False):
    first_values: dict[Any, yaml.Node] = {}
    for key_node, value_node in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *anchor` keys may be overridden by the mapping's own keys
        key = loader.construct_object(key_node, deep=True)
        if key in first_values:
            first = loader.construct_object(first_values[key], deep=True)
            second = loader.construct_object(value_node, deep=True)
            raise RepeatedKey(key, first, second, key_node.start_mark.line + 1)
        first_values[key] = value_node
    loader.flatten_mapping(node)  # merged keys first, so the mapping's own keys win
    return {
        loader.construct_object(key_node, deep=True): loader.construct_object(value_node, deep=True)
        for key_node, value_node in node.value
    }


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)
# YAML 1.1 (PyYAML) needs a dot in a float; YAML 1.2 and every user also mean 1e-3 as a number.
StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


class YamlRefused(ValueError):
    """A YAML document refused before it is built.

    ``constraint`` completes "must be YAML ..." and ``detail`` says what the document does
    instead, so callers can phrase the one line in their own form.
    """

    def __init__(self, constraint: str, detail: str) -> None:
        super().__init__(f"the file must be YAML {constraint}, but {detail}")
        self.constraint, self.detail = constraint, detail


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [child for pair in node.value for child in pair]
    return []


def _check_node(node: yaml.Node) -> None:
    """Refuse a document's plain-scalar problems: a list or mapping as a key, a huge integer."""
    if isinstance(node, yaml.MappingNode):
        for key, _ in node.value:
            if isinstance(key, yaml.SequenceNode | yaml.MappingNode):
                kind = "list" if isinstance(key, yaml.SequenceNode) else "mapping"
                raise YamlRefused(
                    "with plain keys (strings, numbers, booleans or null)",
                    f"a {kind} is used as a key at line {_line(key)}",
                )
    elif node.tag == "tag:yaml.org,2002:int" and len(node.value) > MAX_NUMBER_CHARS:
        raise YamlRefused(
            f"with integers of at most {MAX_NUMBER_CHARS} characters",
            f"line {_line(node)} holds one of {len(node.value):,}",
        )


def _check_graph(root: yaml.Node) -> None:
    """Check the composed node graph against the bounds, without recursion.

    Aliases share node objects, so every node is visited once and sizes are memoised by
    identity: a bomb costs milliseconds. An alias inside its own anchor (``&a [*a]``) would
    expand without end and is refused.
    """
    sizes: dict[int, int] = {}
    depths: dict[int, int] = {}
    entered: set[int] = set()  # the nodes on the path from the root to the current one
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            entered.discard(key)
            children = _children(node)
            size = 1 + sum(sizes[id(child)] for child in children)
            sizes[key] = min(size, MAX_YAML_NODES + 1)
            nested = isinstance(node, yaml.CollectionNode)
            depths[key] = nested + max((depths[id(child)] for child in children), default=0)
            if size > MAX_YAML_NODES:
                raise YamlRefused(
                    f"that expands to at most {MAX_YAML_NODES:,} nodes",
                    "its aliases expand past that",
                )
            if depths[key] > MAX_DEPTH:
                raise YamlRefused(
                    f"nested at most {MAX_DEPTH} levels deep",
                    f"it nests deeper (from line {_line(node)})",
                )
            continue
        if key in sizes:
            continue
        if key in entered:
            raise YamlRefused(
                f"that expands to at most {MAX_YAML_NODES:,} nodes",
                f"an alias refers to its own anchor (line {_line(node)}) and expands without end",
            )
        _check_node(node)
        entered.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in sizes)


def _bound_composition(loader: yaml.SafeLoader) -> None:
    """Make ``loader`` refuse a document while composing it: past :data:`MAX_DEPTH` levels (the
    composer recurses once per level) or :data:`MAX_YAML_NODES` nodes as written, so that
    neither a deep nor a huge document is composed in full before it is refused."""
    compose_node = loader.compose_node
    nodes, depth = 0, 0

    def bounded(parent: yaml.Node | None, index: Any) -> yaml.Node:
        nonlocal nodes, depth
        nodes, depth = nodes + 1, depth + 1
        try:
            if depth > MAX_DEPTH + 1:  # the innermost node is a scalar, not a level
                line = loader.peek_event().start_mark.line + 1
                raise YamlRefused(
                    f"nested at most {MAX_DEPTH} levels deep", f"it nests deeper (line {line})"
                )
            if nodes > MAX_YAML_NODES:
                raise YamlRefused(
                    f"that expands to at most {MAX_YAML_NODES:,} nodes", "it holds more than that"
                )
            return compose_node(parent, index)
        finally:
            depth -= 1

    loader.compose_node = bounded  # the composer calls it through the instance


def load_yaml(text: str, loader_class: type[yaml.SafeLoader] = StrictLoader) -> Any:
    """Parse one YAML document with ``loader_class`` (a SafeLoader), checked before it is built.

    Raises :class:`YamlRefused` for a document past the module's bounds (too many nodes once
    expanded, nested too deep, a list or mapping as a key, a huge integer) and
    ``yaml.YAMLError`` for text that is not YAML or a value that cannot be built (such as the
    date 2020-13-45). Exceptions of the loader's own constructors pass through.
    """
    loader = loader_class(text.removeprefix(_BOM))
    _bound_composition(loader)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_graph(node)
        try:
            return loader.construct_document(node)
        # PyYAML's constructors fail in these ways on scalars they cannot convert: a date such
        # as 2020-13-45, or an explicit tag on the wrong text (`!!bool 3`, `!!int ''`).
        except (ValueError, OverflowError) as error:
            raise yaml.YAMLError(f"a value cannot be built: {error}") from None
        except (KeyError, IndexError, AttributeError):
            raise yaml.YAMLError("a value cannot be built: its text does not fit its tag") from None
    finally:
        loader.dispose()


def yaml_reason(error: yaml.YAMLError) -> str:
    """A YAMLError as one short line (the parser's own marks name no file: the caller does)."""
    reason = " ".join(str(error).replace('in "<unicode string>", ', "").split())
    return reason if len(reason) <= 300 else reason[:297] + "..."


def read_yaml(path: Path, loader_class: type[yaml.SafeLoader] = StrictLoader) -> Any:
    """The YAML document of ``path`` (None for an empty one), bounded as :func:`load_yaml`.

    Exceptions of ``loader_class``'s own constructors (a repeated key, say) pass through.
    """
    text = read_text(path)
    try:
        return load_yaml(text, loader_class)
    except YamlRefused as refused:
        raise BadFile(f"{path}: {refused}.") from None
    except yaml.YAMLError as error:
        raise BadFile(f"{path}: not valid YAML ({yaml_reason(error)}).") from None


# -- JSON -------------------------------------------------------------------------------------


def _nesting_exceeds(obj: Any, limit: int) -> bool:
    """Whether lists and mappings in ``obj`` nest deeper than ``limit`` (no recursion)."""
    stack = [(obj, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth + 1 > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def load_json(
    text: str,
    where: str,
    *,
    object_pairs_hook: Callable[[list[tuple[str, Any]]], Any] | None = None,
) -> Any:
    """Parse JSON text; ``where`` (the file) starts every error line.

    Exceptions of ``object_pairs_hook`` other than ValueError (a repeated key, say) pass
    through.
    """
    text = text.removeprefix(_BOM)
    if not text.strip():
        raise BadFile(f"{where}: the file is empty.")
    deep = BadFile(f"{where}: the JSON must be nested at most {MAX_DEPTH} levels deep.")
    try:
        obj = json.loads(text, object_pairs_hook=object_pairs_hook)
    except RecursionError:  # the decoder recurses once per level
        raise deep from None
    except ValueError as error:  # also an integer of more than 4300 digits
        reason = str(error)
        reason = reason if len(reason) <= 200 else reason[:197] + "..."
        raise BadFile(f"{where}: not valid JSON ({reason}).") from None
    if _nesting_exceeds(obj, MAX_DEPTH):
        raise deep
    return obj


def read_json(
    path: Path,
    *,
    object_pairs_hook: Callable[[list[tuple[str, Any]]], Any] | None = None,
) -> Any:
    """The JSON document of ``path``, bounded as :func:`read_text` and :func:`load_json`."""
    return load_json(read_text(path), str(path), object_pairs_hook=object_pairs_hook)


# -- CSV --------------------------------------------------------------------------------------


def parse_csv(text: str, where: str) -> list[list[str]]:
    """The rows of CSV text; ``where`` (the file) starts every error line.

    The csv module's field limit (128 KiB) is kept rather than raised: it is process-wide state,
    and no name in a table comes near it, so a longer field is reported as a mistake.
    """
    reader = csv.reader(io.StringIO(text.removeprefix(_BOM)))
    try:
        return list(reader)
    except csv.Error as error:
        reason = str(error).split(" - ")[0]  # drop the advice about open(), which does not apply
        raise BadFile(f"{where}: not valid CSV ({reason}, line {reader.line_num}).") from None


# -- images -----------------------------------------------------------------------------------


def _image_errors() -> tuple[type[BaseException], ...]:
    import zlib

    from PIL import Image

    # What PIL's decoders raise for damaged data: OSError (truncated, broken streams), SyntaxError
    # (bad headers), ValueError/EOFError/struct.error/zlib.error (inconsistent or cut chunks),
    # IndexError/TypeError (plugins reading fields past a short or mangled header).
    return (
        OSError,
        SyntaxError,
        ValueError,
        EOFError,
        IndexError,
        TypeError,
        struct.error,
        zlib.error,
        Image.DecompressionBombError,
    )


def open_image(data: bytes, where: str, *, field: str) -> Image.Image:
    """The RGB image encoded in ``data``, decoded completely.

    ``where`` names the source (a file, or "N bytes"); a damaged, truncated or unknown image,
    or one of more than :data:`MAX_IMAGE_PIXELS` pixels, raises one line for ``field``.
    """
    from PIL import Image

    readable = "a readable image (PNG, JPEG, ...)"
    side = math.isqrt(MAX_IMAGE_PIXELS)
    too_many = f"an image of at most {MAX_IMAGE_PIXELS:,} pixels ({side} x {side})"
    errors = _image_errors()
    with warnings.catch_warnings():
        # PIL warns about images past its own limit before the lower one here refuses them.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as probe:
                width, height = probe.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise _refused(field, too_many, where, f"{width} x {height} pixels")
                probe.verify()  # checksums and structure, without decoding the pixels
            with Image.open(io.BytesIO(data)) as image:  # verify() leaves the image unusable
                image.load()
                return image.convert("RGB")
        except UserInputError:
            raise
        except Image.DecompressionBombError as error:  # PIL's own guard, far above this one
            counted = re.search(r"\((\d+) pixels\)", str(error))
            shown = f"{int(counted.group(1)):,} pixels" if counted else "more pixels than that"
            raise _refused(field, too_many, where, shown) from None
        except Image.UnidentifiedImageError:
            raise _refused(field, readable, where, "not an image format PIL knows") from None
        except errors as error:
            reason = " ".join(str(error).split())[:120] or type(error).__name__
            raise _refused(field, readable, where, f"damaged or truncated ({reason})") from None


# -- weights ----------------------------------------------------------------------------------


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
        raise _refused(field, _WEIGHTS, path, str(refused)) from None
