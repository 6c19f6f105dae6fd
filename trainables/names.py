"""Names that become folder names: jobs, searches and search spaces."""

from __future__ import annotations

import re

from trainables.errors import must

#: Letters, digits, ``.``, ``_`` and ``-``, starting with a letter or digit: never ``.``, ``..``,
#: a hidden folder, something a shell or argparse reads as an option, or a path.
_FOLDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
RULE = "1 to 64 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit"


def is_folder_name(text: object) -> bool:
    """Whether ``text`` is safe as one folder name (see :data:`RULE`)."""
    return isinstance(text, str) and _FOLDER_NAME.fullmatch(text) is not None


def check_folder_name(text: object, field: str) -> str:
    """``text`` when it is safe as one folder name; one line naming ``field`` otherwise."""
    if not is_folder_name(text):
        raise must(field, RULE, text)
    return text  # type: ignore[return-value]
