"""Attack radii as papers write them ("4/255"): for tables, JSON keys and MLflow names.

Torch-free, so the command line can format radii without importing the science.
"""

from __future__ import annotations

from fractions import Fraction


def format_eps(eps: float) -> str:
    """Show eps as k/255 when it is one (grey levels, possibly fractional), else as a number."""
    grey_levels = Fraction(eps * 255).limit_denominator(8)
    if abs(float(grey_levels) / 255 - eps) < 1e-9:
        return f"{grey_levels}/255"
    return f"{eps:g}"
