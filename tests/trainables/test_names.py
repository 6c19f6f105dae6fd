"""Names that become folder names: what is accepted and what is refused with one line."""

from __future__ import annotations

import pytest

from trainables.errors import UserInputError
from trainables.names import check_folder_name, is_folder_name


@pytest.mark.parametrize("name", ["demo", "demo-20250101-120000", "a", "v1.2_final", "x" * 64])
def test_plain_names_are_accepted(name):
    assert is_folder_name(name)
    assert check_folder_name(name, "--name") == name


@pytest.mark.parametrize(
    "name",
    ["", ".", "..", ".hidden", "-rf", "_x", "a/b", "../up", "a b", "x" * 65, "é", None, 7],
)
def test_names_that_are_not_one_plain_folder_are_refused(name):
    assert not is_folder_name(name)
    with pytest.raises(UserInputError) as caught:
        check_folder_name(name, "--name")
    assert str(caught.value).startswith("`--name` must be 1 to 64 characters")
    assert "\n" not in str(caught.value)
