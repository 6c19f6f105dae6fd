"""Building an :class:`~raysearch.config.schema.ExperimentConfig` from its nested mapping: every
key, type and value checked against the schema's type hints, the first error as one line naming
the dotted field."""

from __future__ import annotations

import functools
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, fields, is_dataclass, replace
from typing import TYPE_CHECKING, Any

from raysearch.config.schema import DEFAULT_METHOD, HIDDEN, HOISTED, ExperimentConfig, shown
from raysearch.config.writing import join_key
from trainables.errors import UserInputError, must
from trainables.numbers import is_finite_number, is_integer

if TYPE_CHECKING:
    from trainables.methods import MethodSettings

_MUST = re.compile(r"`([^`]+)`( must be .*)", re.DOTALL)


class _Mismatch(Exception):
    """A value of the wrong type (reported by the caller with the field's expected type)."""


def _science_names() -> dict[str, type]:
    from trainables.evaluate import AttackSettings
    from trainables.methods import MethodSettings
    from trainables.training import OptimSettings

    return {
        "AttackSettings": AttackSettings,
        "MethodSettings": MethodSettings,
        "OptimSettings": OptimSettings,
    }


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    if cls.__module__ == ExperimentConfig.__module__:  # the schema resolves these names lazily
        return typing.get_type_hints(cls, localns=_science_names())
    return typing.get_type_hints(cls)


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _describe(hint: Any) -> str:
    if _is_union(hint):
        parts = [_describe(arg) for arg in typing.get_args(hint)]
        return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " or " + parts[-1]
    origin = typing.get_origin(hint)
    if origin is tuple:
        args = typing.get_args(hint)
        return f"a list of {_PLURALS.get(args[0], 'values')}"
    if origin in (dict, Mapping):
        return "a mapping"
    if is_dataclass(hint):
        return "a mapping of settings"
    return _SINGULARS.get(hint, f"a {getattr(hint, '__name__', hint)}")


_SINGULARS = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    type(None): "null",
}
_PLURALS = {str: "strings", int: "integers", float: "numbers", bool: "booleans"}


def _convert(hint: Any, value: Any) -> Any:
    """``value`` as type ``hint`` (strictly: a bool is not an int, a string is not a number)."""
    if hint is Any:
        return value
    if _is_union(hint):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is not type(None):
                try:
                    return _convert(arg, value)
                except _Mismatch:
                    continue
        raise _Mismatch
    if hint is type(None):
        if value is None:
            return None
        raise _Mismatch
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if hint is int:
        if is_integer(value):
            return int(value)
        raise _Mismatch
    if hint is float:
        if is_finite_number(value):
            return float(value)
        raise _Mismatch
    if hint is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple:
        if isinstance(value, (str, int, float, bool)):
            value = [value]  # a single item where a list is expected: `method.trees=form`
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], item) for item in value)
        if len(args) != len(value):
            raise _Mismatch
        return tuple(_convert(arg, item) for arg, item in zip(args, value, strict=True))
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise _Mismatch
        key_type, value_type = args or (Any, Any)
        return {_convert(key_type, k): _convert(value_type, v) for k, v in value.items()}
    raise TypeError(f"the config converter does not support the type {hint!r}")


def _field_value(hint: Any, value: Any, path: str) -> Any:
    try:
        return _convert(hint, value)
    except _Mismatch:
        raise must(path, _describe(hint), shown(value)) from None


def _section(data: Any, path: str) -> dict[str, Any]:
    """A section's mapping; an empty section (``head:`` with nothing below) keeps the defaults."""
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise must(path or "config", "a mapping of settings", shown(data))
    return dict(data)


def _check_keys(
    section: Mapping[str, Any], path: str, allowed: Iterable[str], hidden: Mapping[str, str]
) -> None:
    allowed = sorted(allowed)
    for key, value in section.items():
        if key in hidden:
            raise must(join_key(path, key), hidden[key], shown(value))
        if key not in allowed:
            raise must(join_key(path, key), f"one of the settings [{', '.join(allowed)}]", key)


def _field_default(cls: type, name: str) -> Any:
    for item in fields(cls):
        if item.name == name:
            if item.default is not MISSING:
                return item.default
            if item.default_factory is not MISSING:
                return item.default_factory()
    return None


def _requalified(error: UserInputError, path: str) -> UserInputError:
    """An error of a settings class, named by the dotted path the user wrote.

    ``eps`` raised by the evaluation attack becomes ``evaluation.eps``; ``margins.shape`` raised
    inside ``loss.margins`` becomes ``loss.margins.shape``; other messages are kept.
    """
    match = _MUST.fullmatch(str(error))
    if not match or not path:
        return error
    name, rest = match.groups()
    first, dot, tail = name.partition(".")
    if not dot:
        name = join_key(path, name)
    elif path.rsplit(".", 1)[-1] == first:
        name = f"{path}.{tail}"
    else:
        return error
    return UserInputError(f"`{name}`{rest}")


def _build(
    cls: type,
    data: Any,
    path: str,
    *,
    base: Any = None,
    extra: Mapping[str, Any] | None = None,
) -> Any:
    """Build dataclass ``cls`` from a YAML section, field by field, on top of ``base``.

    ``base`` (an instance of ``cls``) supplies the fields the section leaves out; without it the
    class defaults do. ``extra`` are fields already built elsewhere.
    """
    section = _section(data, path)
    hidden = HIDDEN.get(path, {})
    hints = _hints(cls)
    _check_keys(
        section, path, [f.name for f in fields(cls) if f.init and f.name not in hidden], hidden
    )
    values = dict(extra or {})
    for key, raw in section.items():
        hint, where = hints[key], join_key(path, key)
        if is_dataclass(hint):
            inner = getattr(base, key) if base is not None else _field_default(cls, key)
            values[key] = _build(hint, raw, where, base=inner)
        else:
            values[key] = _field_value(hint, raw, where)
    try:
        return replace(base, **values) if base is not None else cls(**values)
    except UserInputError as error:
        raise _requalified(error, path) from None


def _method(data: Mapping[str, Any]) -> MethodSettings:
    from trainables.methods import METHOD_NAMES, MethodSettings, method_settings

    section = _section(data.get("method"), "method")
    name = _field_value(str, section.get("name", DEFAULT_METHOD), "method.name")
    if name not in METHOD_NAMES:
        raise must("method.name", f"one of {list(METHOD_NAMES)}", name)
    base = method_settings(name)
    _check_keys(
        section,
        "method",
        [f.name for f in fields(MethodSettings) if f.init and f.name not in HOISTED],
        HIDDEN["method"],
    )
    hints = _hints(MethodSettings)
    hoisted = {
        key: _build(hints[key], data.get(key), key, base=getattr(base, key)) for key in HOISTED
    }
    return _build(MethodSettings, section, "method", base=base, extra=hoisted)


def config_from_dict(data: Mapping[str, Any]) -> ExperimentConfig:
    """Build and check an :class:`ExperimentConfig` from its nested mapping (the YAML layout).

    Raises :class:`~trainables.errors.UserInputError` on the first bad key, type or value, as
    one line naming the dotted field.
    """
    from trainables.training import check_seed

    data = _section(data, "config")
    hints = _hints(ExperimentConfig)
    top = [f.name for f in fields(ExperimentConfig)] + list(HOISTED)
    _check_keys(data, "", top, {})
    values: dict[str, Any] = {}
    for key in ("name", "seed"):
        if key in data:
            values[key] = _field_value(hints[key], data[key], key)
    seed = values.get("seed", 0)
    check_seed(seed, "seed")  # before the sections that copy it report it under their name
    values["method"] = _method(data)
    for key in ("optim", "evaluation"):
        values[key] = _build(hints[key], data.get(key), key, extra={"seed": seed})
    for key in ("data", "model", "scaling", "checkpoint", "mlflow"):
        values[key] = _build(hints[key], data.get(key), key)
    return ExperimentConfig(**values)
