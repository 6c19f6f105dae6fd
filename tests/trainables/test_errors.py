"""The standard one-line message of a user mistake."""

from __future__ import annotations

from pathlib import Path

from trainables.errors import MAX_SHOWN, UserInputError, must


def test_the_message_names_the_field_the_rule_and_the_value():
    error = must("optim.lr", "> 0", -1.0)
    assert isinstance(error, UserInputError)
    assert str(error) == "`optim.lr` must be > 0, but got -1.0."


def test_a_path_is_shown_as_typed():
    assert str(must("--json", "a file", Path("out/x.json"))).endswith("but got 'out/x.json'.")


def test_a_long_value_is_cut_to_one_short_line():
    message = str(must("data.trees", "a tree", "x\n" * 10_000))
    assert "\n" not in message
    assert len(message) < MAX_SHOWN + 60
    assert message.endswith("....")


def test_a_value_that_looks_like_a_description_stays_on_one_line():
    assert "\n" not in str(must("name", "a plain name", "<a\nb>"))
