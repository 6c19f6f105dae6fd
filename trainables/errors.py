"""The one error type for user mistakes.

Every bad input (a malformed file, an out-of-range setting, a missing resource) raises
:class:`UserInputError` with a one-line message. The CLI prints that line and exits with code 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Any


class UserInputError(ValueError):
    """A mistake in what the user asked for, reported as one line."""


#: The longest value a message repeats: what the user gave may be a whole file's content.
MAX_SHOWN = 200


def must(field: str, constraint: str, got: Any) -> UserInputError:
    """Build the standard message: "`field` must be <constraint>, but got <got>."."""
    if isinstance(got, PurePath):
        got = str(got)  # a path reads as the user typed it, not as PosixPath('...')
    # A "<...>" value is a description, shown as is but on one line; anything else as repr.
    shown = " ".join(got.split()) if isinstance(got, str) and got.startswith("<") else repr(got)
    if len(shown) > MAX_SHOWN:
        shown = f"{shown[: MAX_SHOWN - 3]}..."
    return UserInputError(f"`{field}` must be {constraint}, but got {shown}.")
