"""Fixed-width text tables for the terminal: the one renderer of every table the CLI prints."""

from __future__ import annotations

from collections.abc import Sequence


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
