"""The parameters of a search space: each entry of ``space`` parsed into a :class:`Param`, its
distribution, bounds and ``when`` conditions checked, and every value it can take applied to the
base config. The file format is described in :mod:`raysearch.spaces`."""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from raysearch.config import ExperimentConfig, apply_overrides, config_from_dict, flatten
from trainables.errors import UserInputError, must
from trainables.numbers import is_finite_number, is_integer, is_number

#: Distribution types of ordinary parameters.
DISTRIBUTIONS = ("categorical", "int", "float", "fixed")
_PARAM_KEYS = {
    "categorical": ("type", "choices", "when"),
    "int": ("type", "low", "high", "step", "log", "when"),
    "float": ("type", "low", "high", "step", "log", "when"),
    "fixed": ("type", "value", "when"),
    "subset": ("type", "of", "min", "max", "when"),
    "depth": ("type", "low", "high", "per_tree", "when"),
}
#: Joins the trees of one ``trees`` choice: ``"form+corners"``.
SUBSET_SEPARATOR = "+"
_MAX_SUBSETS = 4096
_MUST = re.compile(r"`([^`]+)` must be (.*), but got .*", re.DOTALL)
#: Config keys the special parameters set; writing them in `space` directly is refused.
_RESERVED = {"method.trees": "trees", "method.depths": "depth"}


@dataclass(frozen=True)
class Param:
    """One entry of ``space``.

    ``kind`` is a distribution type, ``"subset"`` (the ``trees`` entry) or ``"depth"``. ``when``
    is ``((param, (accepted values...)), ...)``. For ``subset``, ``choices`` are the subsets
    written ``"a+b"``; for ``depth``, ``ranges`` maps each candidate tree to its ``(low, high)``.
    """

    name: str
    kind: str
    choices: tuple[Any, ...] = ()
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    log: bool = False
    value: Any = None
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    ranges: Mapping[str, tuple[int, int]] = field(default_factory=dict)


def is_active(param: Param, sampled: Mapping[str, Any]) -> bool:
    return all(name in sampled and matches(sampled[name], values) for name, values in param.when)


def matches(value: Any, accepted: tuple[Any, ...]) -> bool:
    # 1 == True in Python; a condition on a boolean must not accept the integer.
    return any(value == item and type(value) is type(item) for item in accepted) or any(
        is_number(value) and is_number(item) and value == item for item in accepted
    )


def mapping_of(value: Any, where: str, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise must(where, what, value)
    return dict(value)


def check_keys(section: Mapping[str, Any], where: str, allowed: tuple[str, ...]) -> None:
    for key in section:
        if key not in allowed:
            prefix = f"{where}." if where else ""
            raise must(f"{prefix}{key}", f"one of the keys [{', '.join(allowed)}]", key)


def parse_params(
    value: Any,
    base_dict: Mapping[str, Any],
    base: ExperimentConfig,
    depths: Mapping[str, int],
    default_trees: tuple[str, ...],
) -> tuple[Param, ...]:
    space = mapping_of(value, "space", "a mapping of parameters")
    if not space:
        raise must("space", "at least one parameter", value)
    known = set(flatten(base))
    params: dict[str, Param] = {}
    candidates = default_trees  # the trees `depth` may be sampled for
    for name, spec in space.items():
        where = f"space.{name}"
        if not isinstance(name, str):
            raise must("space", "parameters named by strings", name)
        spec = mapping_of(spec, where, "a mapping with a `type`")
        kind = spec.get("type")
        if name == "trees":
            if kind != "subset":
                raise must(f"{where}.type", "'subset'", kind)
        elif name == "depth":
            if kind != "int":
                raise must(f"{where}.type", "'int'", kind)
            kind = "depth"
        elif name in _RESERVED:
            raise must("space", f"the parameter `{_RESERVED[name]}` instead of `{name}`", name)
        elif name not in known:
            raise must(where, "a setting of the experiment config, such as optim.lr", name)
        elif name.startswith("scaling."):
            # Every trial's resources are reserved, and its trial path chosen, from the base.
            raise must(where, "set in the base config or overrides (one scaling per search)", name)
        elif kind not in DISTRIBUTIONS:
            raise must(f"{where}.type", f"one of {list(DISTRIBUTIONS)}", kind)
        check_keys(spec, where, _PARAM_KEYS[kind])
        when = _when(spec.get("when"), where, params)
        if kind == "subset":
            param = _subset(spec, where, depths, when)
            candidates = _subset_candidates(spec, depths)
        elif kind == "depth":
            if "trees" not in params and "trees" in space:
                raise must("space.depth", "after `trees` in the file", "depth")
            param = _depth(spec, where, depths, candidates, when)
        elif kind == "categorical":
            param = _categorical(spec, where, name, when)
        elif kind == "fixed":
            if "value" not in spec:
                raise must(f"{where}.value", "given", None)
            param = Param(name, kind, value=spec["value"], when=when)
        else:
            param = _numeric(spec, where, name, kind, when)
        if kind not in ("subset", "depth"):
            _check_values(param, base_dict, where)
        params[name] = param
    return tuple(params.values())


def _when(value: Any, where: str, earlier: Mapping[str, Param]) -> tuple:
    if value is None:
        return ()
    section = mapping_of(value, f"{where}.when", "a mapping {parameter: value or [values]}")
    if not section:
        raise must(f"{where}.when", "a non-empty mapping {parameter: value or [values]}", value)
    result = []
    for name, accepted in section.items():
        if name not in earlier:
            raise must(f"{where}.when", "a parameter defined earlier in `space`", name)
        values = tuple(accepted) if isinstance(accepted, list) else (accepted,)
        if not values:
            raise must(f"{where}.when.{name}", "a value or a non-empty list of values", accepted)
        other = earlier[name]
        if other.kind in ("categorical", "subset"):
            for item in values:
                if not matches(item, other.choices):
                    raise must(
                        f"{where}.when.{name}", f"among the choices {list(other.choices)}", item
                    )
        elif other.kind == "fixed":
            pass
        elif other.kind == "depth":
            raise must(f"{where}.when", "a parameter other than `depth`", name)
        else:
            for item in values:
                if not (is_number(item) and other.low <= item <= other.high):
                    raise must(
                        f"{where}.when.{name}",
                        f"in [{other.low}, {other.high}], the range of `{name}`",
                        item,
                    )
        result.append((name, values))
    return tuple(result)


def _subset_candidates(spec: Mapping[str, Any], depths: Mapping[str, int]) -> tuple[str, ...]:
    of = spec.get("of")
    return tuple(of) if of is not None else tuple(depths)


def _subset(spec: Mapping[str, Any], where: str, depths: Mapping[str, int], when) -> Param:
    of = spec.get("of", list(depths))
    if not isinstance(of, list) or not of:
        raise must(f"{where}.of", "a non-empty list of tree names", of)
    for tree in of:
        if tree not in depths:
            raise must(f"{where}.of", f"names of trees in [{', '.join(depths)}]", tree)
    if len(set(of)) != len(of):
        raise must(f"{where}.of", "distinct tree names", of)
    low, high = spec.get("min", 1), spec.get("max", len(of))
    if not is_integer(low) or not 1 <= low <= len(of):
        raise must(f"{where}.min", f"an integer in [1, {len(of)}]", low)
    if not is_integer(high) or not low <= high <= len(of):
        raise must(f"{where}.max", f"an integer in [{low}, {len(of)}] (min to len(of))", high)
    count = sum(math.comb(len(of), size) for size in range(low, high + 1))
    if count > _MAX_SUBSETS:
        raise must(where, f"at most {_MAX_SUBSETS} subsets of trees", count)
    choices = tuple(
        SUBSET_SEPARATOR.join(subset)
        for size in range(low, high + 1)
        for subset in itertools.combinations(of, size)
    )
    return Param("trees", "subset", choices=choices, low=low, high=high, when=when)


def _depth(
    spec: Mapping[str, Any],
    where: str,
    depths: Mapping[str, int],
    candidates: tuple[str, ...],
    when,
) -> Param:
    per_tree = mapping_of(
        spec.get("per_tree"), f"{where}.per_tree", "a mapping {tree: {low, high}}"
    )
    for tree in per_tree:
        if tree not in candidates:
            raise must(
                f"{where}.per_tree", f"names of the candidate trees [{', '.join(candidates)}]", tree
            )
    ranges: dict[str, tuple[int, int]] = {}
    for tree in candidates:
        if tree in per_tree:
            inner = mapping_of(per_tree[tree], f"{where}.per_tree.{tree}", "a mapping {low, high}")
            check_keys(inner, f"{where}.per_tree.{tree}", ("low", "high"))
            field_prefix, source = f"{where}.per_tree.{tree}", inner
        else:
            field_prefix, source = where, spec
        low, high = source.get("low", 1), source.get("high", depths[tree])
        top = depths[tree]
        if not is_integer(low) or not 1 <= low <= top:
            raise must(f"{field_prefix}.low", f"an integer in [1, {top}] for tree `{tree}`", low)
        if not is_integer(high) or not low <= high <= top:
            hint = "" if tree in per_tree else "; give `per_tree` ranges for shallower trees"
            raise must(
                f"{field_prefix}.high",
                f"an integer in [{low}, {top}], the depth of tree `{tree}`{hint}",
                high,
            )
        ranges[tree] = (low, high)
    return Param("depth", "depth", when=when, ranges=ranges)


def _categorical(spec: Mapping[str, Any], where: str, name: str, when) -> Param:
    choices = spec.get("choices")
    if not isinstance(choices, list) or not choices:
        raise must(f"{where}.choices", "a non-empty list", choices)
    for item in choices:
        if item is not None and not isinstance(item, (str, int, float, bool)):
            raise must(f"{where}.choices", "scalars (strings, numbers, booleans, null)", item)
    for index, item in enumerate(choices):
        if matches(item, tuple(choices[:index])):
            raise must(f"{where}.choices", "distinct values", item)
    return Param(name, "categorical", choices=tuple(choices), when=when)


def _numeric(spec: Mapping[str, Any], where: str, name: str, kind: str, when) -> Param:
    check, what = (
        (is_integer, "an integer") if kind == "int" else (is_finite_number, "a finite number")
    )
    for key in ("low", "high"):
        if not check(spec.get(key)):
            raise must(f"{where}.{key}", what, spec.get(key))
    low, high = spec["low"], spec["high"]
    if low > high:
        raise must(f"{where}.low", f"<= high ({high})", low)
    log, step = spec.get("log", False), spec.get("step")
    if not isinstance(log, bool):
        raise must(f"{where}.log", "true or false", log)
    if step is not None:
        if not check(step) or not step > 0:
            raise must(f"{where}.step", f"{what} > 0", step)
        if log:
            raise must(f"{where}.step", "null when log is true", step)
        if kind == "int" and (high - low) % step:
            raise must(f"{where}.high", f"low + a multiple of step ({low} + k * {step})", high)
        if kind == "float" and not math.isclose(
            round((high - low) / step) * step, high - low, rel_tol=1e-9, abs_tol=1e-12
        ):
            raise must(f"{where}.high", f"low + a multiple of step ({low} + k * {step})", high)
    if log and not low > 0:
        low_bound = "an integer >= 1" if kind == "int" else "> 0"
        raise must(f"{where}.low", f"{low_bound} when log is true", low)
    if kind == "float":
        low, high = float(low), float(high)
    return Param(name, kind, low=low, high=high, step=step, log=log, when=when)


def _check_values(param: Param, base_dict: Mapping[str, Any], where: str) -> None:
    """Build the base config with every value ``param`` can take at its ends."""
    if param.kind == "categorical":
        tries = [("choices", item) for item in param.choices]
    elif param.kind == "fixed":
        tries = [("value", param.value)]
    else:
        tries = [("low", param.low), ("high", param.high)]
    for key, item in tries:
        try:
            config_from_dict(apply_overrides(base_dict, {param.name: item}))
        except UserInputError as error:
            match = _MUST.fullmatch(str(error))
            if match and match.group(1) == param.name:
                constraint = match.group(2)
            else:
                constraint = f"accepted by the base config ({error})"
            raise must(f"{where}.{key}", constraint, item) from None
