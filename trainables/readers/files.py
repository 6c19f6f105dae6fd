"""Bounded reading of user text files: paths, bytes, UTF-8 text, JSON and CSV.

The one error type of every reader in :mod:`trainables.readers` (:class:`BadFile`) and the one
form of a refused setting (:func:`refused_setting`) live here too.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainables.errors import UserInputError

#: The largest text file read (configs, search spaces, class trees, model folders' JSON). The
#: biggest real one, a WordNet tree of thousands of classes, is a few MiB.
MAX_TEXT_BYTES = 16 * 2**20
#: The deepest nesting of lists and mappings in YAML or JSON. Real files nest a handful of
#: levels; the bound keeps every later recursive walk of the data far from Python's own limit.
MAX_DEPTH = 100

#: The byte order mark some editors and spreadsheets write first.
BOM = "\ufeff"


def refused_setting(field: str, constraint: str, where: str | Path, detail: str) -> UserInputError:
    """The standard message with ``<where: detail>`` as the value, never shortened (``must``
    shortens long values; here the file's name and the reason are both needed)."""
    return UserInputError(f"`{field}` must be {constraint}, but got <{where}: {detail}>.")


class BadFile(UserInputError):
    """A user file that cannot be read as what it should be; the line starts with its name."""


def bad_file(path: str | Path, problem: str) -> BadFile:
    """``problem`` of the file ``path``, as one line that starts with the file's name."""
    return BadFile(f"{path}: {problem}")


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
    return text.removeprefix(BOM).replace("\r\n", "\n").replace("\r", "\n")


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
    text = text.removeprefix(BOM)
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
    reader = csv.reader(io.StringIO(text.removeprefix(BOM)))
    try:
        return list(reader)
    except csv.Error as error:
        reason = str(error).split(" - ")[0]  # drop the advice about open(), which does not apply
        raise BadFile(f"{where}: not valid CSV ({reason}, line {reader.line_num}).") from None
