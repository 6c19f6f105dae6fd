"""The terminal table renderer every CLI table goes through."""

from __future__ import annotations

import pytest

from raysearch.tables import format_cell, render_table


def test_columns_are_as_wide_as_their_widest_cell_and_right_aligned_by_default():
    text = render_table(["a", "long name"], [["1", "2"], ["333", "4"]])
    assert text.splitlines() == ["  a  long name", "  1          2", "333          4"]


def test_left_aligned_columns_leave_no_trailing_spaces():
    text = render_table(["name", "n"], [["x", "10"], ["yyyy", "2"]], right=[False, True])
    assert text.splitlines() == ["name   n", "x     10", "yyyy   2"]
    lines = render_table(["name"], [["a"], ["bbb"]], right=[False]).splitlines()
    assert lines == ["name", "a", "bbb"]


def test_a_table_without_rows_is_its_header():
    assert render_table(["trial", "status"], []) == "trial  status"


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        (0.000312345, "0.0003123"),
        ("0.000312345", "0.0003123"),  # MLflow keeps params as text
        (float("nan"), "nan"),
        (float("inf"), "inf"),
        (3, "3"),
        (True, "True"),
        ("form,symmetry", "form,symmetry"),
        ("1.2.3", "1.2.3"),
        ("nan.txt", "nan.txt"),
    ],
)
def test_cells_show_numbers_to_four_significant_digits(value, cell):
    assert format_cell(value) == cell


def test_a_missing_cell_and_a_long_one():
    assert format_cell(None) == ""
    assert format_cell(None, missing="-") == "-"
    assert format_cell("x" * 40, width=32) == "x" * 29 + "..."
    assert format_cell("x" * 32, width=32) == "x" * 32
