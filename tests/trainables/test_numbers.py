"""Number checks: booleans are never numbers, NumPy scalars are, infinities are not finite."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from trainables.numbers import is_finite_number, is_integer, is_number


@pytest.mark.parametrize("value", [True, False, np.bool_(True)])
def test_booleans_are_not_numbers(value):
    assert not is_integer(value) and not is_number(value) and not is_finite_number(value)


@pytest.mark.parametrize("value", [None, "1", [1], 1j, {"a": 1}])
def test_other_types_are_not_numbers(value):
    assert not is_integer(value) and not is_number(value) and not is_finite_number(value)


@given(st.integers())
def test_every_int_is_an_integer_and_a_finite_number(value):
    assert is_integer(value) and is_number(value) and is_finite_number(value)


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_a_float_is_a_number_never_an_integer_and_finite_only_when_finite(value):
    assert is_number(value) and not is_integer(value)
    assert is_finite_number(value) == math.isfinite(value)


@pytest.mark.parametrize("value", [np.int8(-3), np.int64(7), np.uint16(9)])
def test_numpy_integers_are_integers(value):
    assert is_integer(value) and is_finite_number(value)


@pytest.mark.parametrize("value", [np.float32(0.5), np.float64(-2.0)])
def test_numpy_floats_are_numbers_not_integers(value):
    assert is_number(value) and not is_integer(value) and is_finite_number(value)


def test_numpy_infinity_is_not_finite():
    assert is_number(np.float64("inf")) and not is_finite_number(np.float64("inf"))
