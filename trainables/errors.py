"""The one error type for user mistakes.

Every bad input (a malformed file, an out-of-range setting, a missing resource) raises
:class:`UserInputError` with a one-line message. The CLI prints that line and exits with code 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from typing import Any


class UserInputError(ValueError):
    """A mistake in what the user asked for, reported as one line."""


def must(field: str, constraint: str, got: Any) -> UserInputError:
    """Build the standard message: "`field` must be <constraint>, but got <got>."."""
    shown = got if isinstance(got, str) and got.startswith("<") else repr(got)
    return UserInputError(f"`{field}` must be {constraint}, but got {shown}.")
