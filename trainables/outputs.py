"""Checks of the files and folders a user names for output, made before any work starts."""

from __future__ import annotations

import os
from pathlib import Path

from trainables.errors import must

#: Kernel file systems: writing there fails or, worse, changes the machine.
_PSEUDO_ROOTS = (Path("/proc"), Path("/sys"))


def check_output_file(path: str | Path, field: str, *, replace: bool = True) -> Path:
    """``path`` when a file can be written there; one line naming ``field`` otherwise.

    Refused: a directory, a path under a file or on a kernel file system, a folder this user
    cannot write, and (with ``replace=False``) an existing file. Missing folders are fine: the
    writer creates them. Nothing is created here.
    """
    path = Path(path)
    shown = str(path)
    if path.is_dir():
        raise must(field, "a file path, not a folder", shown)
    if path.exists() and not replace:
        raise must(field, f"a new file ({shown} exists: add --force to replace it)", shown)
    if path.exists() and not os.access(path, os.W_OK):
        raise must(field, "a file you can write", shown)
    _check_writable_folder(path.parent, field, shown)
    return path


def check_output_folder(path: str | Path, field: str) -> Path:
    """``path`` when a folder can be used or created there; one line naming ``field`` otherwise."""
    path = Path(path)
    shown = str(path)
    if path.exists() and not path.is_dir():
        raise must(field, "a folder, not a file", shown)
    _check_writable_folder(path, field, shown)
    return path


def _check_writable_folder(folder: Path, field: str, shown: str) -> None:
    resolved = folder.expanduser().resolve()
    if any(resolved == root or root in resolved.parents for root in _PSEUDO_ROOTS):
        raise must(field, "a path outside /proc and /sys", shown)
    existing = resolved
    while not existing.exists():  # the folders a writer would create, up to one that exists
        existing = existing.parent
    if not existing.is_dir():
        raise must(field, f"a path whose folders can be created ({existing} is a file)", shown)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise must(field, f"a path in a folder you can write ({existing} is not)", shown)
