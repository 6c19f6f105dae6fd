"""The terminal table renderer every CLI table goes through."""

from __future__ import annotations

from raysearch.tables import render_table


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
