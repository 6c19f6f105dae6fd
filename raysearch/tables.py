"""Fixed-width text tables for the terminal: the one renderer of every table the CLI prints, and
the one way a value becomes a cell."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def render_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], *, right: Sequence[bool] | None = None
) -> str:
    """``header`` and ``rows`` of text cells in columns as wide as their widest cell, two spaces
    apart; a column is right-aligned where ``right`` says (every column when None), else
    left-aligned. Lines carry no trailing spaces."""
    lines = [list(header), *(list(row) for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    aligned = [True] * len(header) if right is None else list(right)

    def render(line: Sequence[str]) -> str:
        cells = (
            cell.rjust(width) if to_right else cell.ljust(width)
            for cell, width, to_right in zip(line, widths, aligned, strict=True)
        )
        return "  ".join(cells).rstrip()

    return "\n".join(render(line) for line in lines)


def format_cell(value: Any, *, missing: str = "", width: int | None = None) -> str:
    """``value`` as a table cell: floats to 4 significant digits, numeric text with a decimal
    point too (MLflow keeps params as text: 0.000312345 -> 0.0003123), None as ``missing``; cut
    to ``width`` characters (with "...") when given."""
    if value is None:
        return missing
    if isinstance(value, float):
        text = "nan" if math.isnan(value) else f"{value:.4g}"
    else:
        text = str(value)
        if isinstance(value, str) and "." in text:
            try:
                number = float(text.strip())
            except ValueError:
                number = math.nan
            if math.isfinite(number):
                text = f"{number:.4g}"
    if width is not None and len(text) > width:
        text = text[: width - 3] + "..."
    return text
