"""Checks of the files and folders a user names for output, made before any work starts."""

from __future__ import annotations

import os
from pathlib import Path

from trainables.errors import must
from trainables.readers import expanded

#: Kernel file systems: writing there fails or, worse, changes the machine.
_PSEUDO_ROOTS = (Path("/proc"), Path("/sys"))


def check_output_file(path: str | Path, field: str, *, replace: bool = True) -> Path:
    """The file to write for ``path`` (``~`` expanded); one line naming ``field`` when it
    cannot be written.

    Refused: a directory, a path under a file or on a kernel file system, a folder this user
    cannot write, a name the system refuses, and (with ``replace=False``) an existing file.
    Missing folders are fine: the writer creates them. Nothing is created here.
    """
    target = expanded(path)
    try:
        if target.is_dir():
            raise must(field, "a file path, not a folder", str(path))
        if target.exists() and not replace:
            raise must(field, "a new file (add --force to replace it)", str(path))
        if target.exists() and not os.access(target, os.W_OK):
            raise must(field, "a file you can write", str(path))
        _check_writable_folder(target.parent, field, str(path))
    except OSError as error:  # a name too long, a folder that cannot be entered
        raise must(field, f"a path this system can use ({error.strerror})", str(path)) from None
    return target


def check_output_folder(path: str | Path, field: str) -> Path:
    """The folder to use or create for ``path`` (``~`` expanded); one line naming ``field``
    when it cannot be."""
    target = expanded(path)
    try:
        if target.exists() and not target.is_dir():
            raise must(field, "a folder, not a file", str(path))
        _check_writable_folder(target, field, str(path))
    except OSError as error:
        raise must(field, f"a path this system can use ({error.strerror})", str(path)) from None
    return target


def _check_writable_folder(folder: Path, field: str, shown: str) -> None:
    resolved = folder.resolve()
    if any(resolved == root or root in resolved.parents for root in _PSEUDO_ROOTS):
        raise must(field, "a path outside /proc and /sys", shown)
    existing = resolved
    while not existing.exists():  # the folders a writer would create, up to one that exists
        existing = existing.parent
    if not existing.is_dir():
        raise must(field, f"a path whose folders can be created ({existing} is a file)", shown)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise must(field, f"a path in a folder you can write ({existing} is not)", shown)
