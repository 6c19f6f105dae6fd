"""Sorting and filtering records by their fields (``--sort``, ``--filter``): pure functions."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from raysearch.inspection.records import BEST_PREFIX, PARAM_PREFIX, TrialInfo
from trainables.errors import must


def as_number(value: Any) -> float | None:
    """A finite number from a number or a numeric string (MLflow keeps params as text)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    try:
        number = float(str(value).strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def parse_sort(text: str) -> tuple[str, bool]:
    """``METRIC`` or ``METRIC:desc`` (descending), ``METRIC:asc`` -> (field, descending)."""
    name, _, order = text.partition(":")
    name, order = name.strip(), order.strip().lower() or "desc"
    if not _FIELD.fullmatch(name) or order not in ("asc", "desc"):
        raise must("--sort", "METRIC, METRIC:asc or METRIC:desc (e.g. robust_leaf:asc)", text)
    return name, order == "desc"


def _sort_key(value: Any) -> tuple:
    number = as_number(value)
    return (0, number, "") if number is not None else (1, 0.0, str(value))


def sort_rows(rows: Sequence, name: str, *, descending: bool = True) -> list:
    """``rows`` by the field ``name``; rows without it come last either way (stable)."""
    present = [row for row in rows if row.value(name) is not None]
    missing = [row for row in rows if row.value(name) is None]
    present.sort(key=lambda row: _sort_key(row.value(name)), reverse=descending)
    return present + missing


@dataclass(frozen=True)
class Condition:
    """One comparison of a filter: ``field op value``."""

    field: str
    op: str
    text: str
    quoted: bool = False

    @property
    def number(self) -> float | None:
        return None if self.quoted else as_number(self.text)

    def matches(self, row) -> bool:
        """Missing (or NaN) values match nothing, ``!=`` included."""
        value = row.value(self.field)
        if value is None:
            return False
        left, right = as_number(value), self.number
        if left is None or right is None:
            left, right = _text(value), self.text  # strings compare as strings
        return _OPERATORS[self.op](left, right)


_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: a == b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-/]*")
_CLAUSE = re.compile(
    r"\s*(?P<field>[A-Za-z_][A-Za-z0-9_.\-/]*)\s*(?P<op><=|>=|!=|==|=|<|>)\s*(?P<value>.*?)\s*"
)
FILTER_HELP = (
    "comparisons such as robust_leaf>0.5, status=finished or param.optim.lr<1e-3 "
    "(= != < <= > >=), joined with ' and '"
)


def _text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _split_and(expression: str) -> list[str]:
    """Split on the word ``and`` outside quotes."""
    parts, current, quote = [], [], None
    index = 0
    while index < len(expression):
        char = expression[index]
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif re.match(r"\s+and\s+", expression[index:], flags=re.IGNORECASE) and current:
            match = re.match(r"\s+and\s+", expression[index:], flags=re.IGNORECASE)
            parts.append("".join(current))
            current = []
            index += match.end()
            continue
        current.append(char)
        index += 1
    parts.append("".join(current))
    return parts


def parse_filter(expression: str) -> list[Condition]:
    """``robust_leaf>0.5 and status=finished`` -> its conditions (all must hold).

    A value in quotes is a string; otherwise it is compared as a number when both sides are
    numbers, as a string else. No ``eval``: anything else is refused with one line.
    """
    conditions = []
    for clause in _split_and(expression):
        found = _CLAUSE.fullmatch(clause)
        if found is None:
            raise must("--filter", FILTER_HELP, expression)
        value, quoted = found["value"], False
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value, quoted = value[1:-1], True
        elif not value or any(char.isspace() or char in "<>=!'\"" for char in value):
            raise must("--filter", FILTER_HELP, expression)
        conditions.append(Condition(found["field"], found["op"], value, quoted))
    return conditions


def filter_rows(rows: Iterable, conditions: Sequence[Condition]) -> list:
    return [row for row in rows if all(c.matches(row) for c in conditions)]


def known_fields(rows: Sequence, columns: Iterable[str]) -> list[str]:
    """The fields rows can be sorted and filtered by: columns, metrics, ``param.<name>``."""
    names = dict.fromkeys(columns)
    for row in rows:
        if isinstance(row, TrialInfo):
            names.update(dict.fromkeys(sorted(row.metrics)))
            names.update(dict.fromkeys(f"{PARAM_PREFIX}{key}" for key in sorted(row.params)))
        else:
            names.update(dict.fromkeys(f"{BEST_PREFIX}{key}" for key in sorted(row.best)))
            names.update(dict.fromkeys(sorted(row.metrics)))
    return list(names)


def check_field(rows: Sequence, name: str, option: str, got: str, columns: Iterable[str]) -> None:
    """Refuse a field no row has and no column is (a typo would sort or filter nothing)."""
    columns = list(columns)
    if not rows or name in columns or any(row.value(name) is not None for row in rows):
        return
    fields = known_fields(rows, columns)
    shown = ", ".join(fields[:14]) + (", ..." if len(fields) > 14 else "")
    raise must(option, f"about a field these rows have ({name!r} is none: {shown})", got)


def select(
    rows: Sequence,
    *,
    sort: str | None = None,
    where: str | None = None,
    columns: Iterable[str] = (),
) -> list:
    """``rows`` filtered by ``where`` (the ``--filter`` language), then sorted by ``sort``."""
    columns = list(columns)
    if where:
        conditions = parse_filter(where)
        for condition in conditions:
            check_field(rows, condition.field, "--filter", where, columns)
        rows = filter_rows(rows, conditions)
    if sort:
        name, descending = parse_sort(sort)
        check_field(rows, name, "--sort", sort, columns)
        rows = sort_rows(rows, name, descending=descending)
    return list(rows)
