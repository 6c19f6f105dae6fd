"""Type checks for numbers read from users: integers and finite numbers, never booleans.

YAML and JSON turn ``true`` into a bool, and Python counts a bool as an int; a setting that
takes a number must not quietly take ``true`` as 1. NumPy scalars count as numbers.
"""

from __future__ import annotations

import math
import numbers
from typing import Any


def is_integer(value: Any) -> bool:
    """An int (or NumPy integer), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """An int or float (or NumPy scalar), not a bool; may be infinite or NaN."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_finite_number(value: Any) -> bool:
    """A number that is neither infinite nor NaN."""
    return is_number(value) and math.isfinite(value)
