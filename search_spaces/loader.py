"""Search spaces: a YAML file that names a base experiment, the objectives, a budget and the
parameters Optuna samples, checked completely before anything starts.

The format (``search_spaces/demo.yaml`` is a complete, commented example)::

    name: demo                       # the search's name (study name prefix); A-Z a-z 0-9 . _ -
    base: embedded-experiment.yaml   # the experiment config: a path relative to this file, an
                                     # inline mapping, or null (every default)
    overrides: [optim.epochs=2]      # optional key=value applied to the base (values are YAML)
    objective:                       # one objective, or a list of one or two (two: Pareto)
      - {metric: robust_leaf, mode: max}
      - {metric: clean_leaf, mode: max}
    budget: {trials: 6, concurrency: 1, scheduler: asha, grace_epochs: 1, seed: 0}
    space:                           # sampled in file order
      trees: {type: subset, of: [form, symmetry, corners], min: 1, max: 3}
      depth: {type: int, low: 1, high: 2, per_tree: {form: {low: 1, high: 3}}}
      loss.margins.shape: {type: categorical, choices: [constant, linear, geometric, theorem]}
      loss.margins.kappa: {type: float, low: 0.01, high: 0.2, when: {loss.margins.shape: theorem}}
      optim.lr: {type: float, low: 1e-4, high: 2e-3, log: true}
      attack.steps: {type: int, low: 1, high: 3}
      attack.eps: {type: fixed, value: 0.0156862745}

Objectives: ``metric`` is one the training job reports on the **validation** split
(``clean_leaf``, ``robust_leaf``, ``transfer``, ``loss``, ``clean/<tree>/<level>`` for a tree of
the base forest and a level from 0, the leaves, to the tree's depth, and with a zero-shot suite
``zeroshot_clean``, ``zeroshot_robust`` and ``zeroshot/<dataset>/<clean|robust>``); ``mode`` is
``max`` or ``min``. Test-split metrics (``test/...``) are reported, never selected on: they are
refused here.

Objectives measured only after a trial's last epoch (``transfer``, ``worst_superclass``: the
lowest superclass-level accuracy under its own attack; the zero-shot metrics unless
``data.zeroshot_every_epoch`` is true) cannot come first with ASHA, which compares trials after
every epoch on the first objective.

Budget: ``trials`` >= 1 (default 8), ``concurrency`` >= 1 or ``auto`` (default 1; ``auto`` runs
as many trials at once as the cluster has CPUs and GPUs for; an explicit number is also capped
by that), ``scheduler`` ``asha`` (default) or ``none``, ``grace_epochs`` >= 1 (default 1: ASHA
stops no trial before it), ``reduction_factor`` >= 2 (default 3: ASHA keeps the best third at
every rung), ``seed`` >= 0 (default 0, seeds the sampler).

Parameters: every key of ``space`` but ``trees`` and ``depth`` is a dotted setting of the
experiment config (``optim.lr``, ``loss.margins.shape``) and the sampled value overrides it.
Distributions (``type``):

- ``categorical``: ``choices``, a non-empty list of distinct scalars (strings, numbers, booleans,
  null);
- ``int``: integer ``low`` <= ``high``; optional ``step`` (>= 1, ``high - low`` a multiple of
  it) or ``log: true`` (``low`` >= 1), not both;
- ``float``: ``low`` <= ``high``; optional ``step`` (> 0) or ``log: true`` (``low`` > 0), not
  both;
- ``fixed``: ``value``, any YAML value, never sampled but returned with the others (so it is
  logged with each trial).

Any parameter may carry ``when: {param: value or [values], ...}``: it is sampled only when every
named parameter was sampled earlier in the file (not only defined: active too) with one of the
given values. A parameter that is not sampled keeps the base config's value. ``when`` may only
name parameters defined above it.

The two special parameters:

- ``trees: {type: subset, of: [...], min: 1, max: N}`` chooses ``method.trees``. ``of`` (default:
  every tree of the base forest) lists candidate trees in the order they are used. It is sampled
  as ONE categorical parameter ``trees`` whose choices are every subset of ``of`` with ``min`` to
  ``max`` trees, written ``"form+corners"`` (trees kept in the order of ``of``). Every sample is
  thus a valid subset, no repair step changes what the sampler recorded, and the choices are the
  same in every trial (Optuna's samplers need that). The price: TPE does not share information
  between subsets that have a tree in common, which is fine for the few trees of a forest (at
  most 4096 subsets are accepted).
- ``depth: {type: int, low: 1, high: H, per_tree: {tree: {low, high}}}`` chooses
  ``method.depths``: one integer parameter ``depth.<tree>`` per chosen tree, sampled only for the
  trees chosen in that trial (a real conditional, not a dead dimension). ``per_tree`` gives a
  tree its own range; every other tree uses ``low`` (default 1) and ``high`` (default: the tree's
  own depth). A range beyond a candidate tree's depth is an error. Without a ``trees`` parameter
  (or when it is not sampled) the depths apply to the base config's trees. ``depth`` must come
  after ``trees``.

Checks (all in :func:`load_space`): unknown keys at every level, distributions and their bounds,
every parameter path and every value a parameter can take (each choice, both ends of a range,
the fixed value) applied to the base config and built, ``when`` references, tree names and
depths against the base config's forest, objectives and budget, and one representative trial
(first choices, low ends) built and checked against the forest. Errors are
:class:`~trainables.errors.UserInputError` with one line, "`field` must be ..., but got ....",
named by where the mistake is in the file (``space.optim.lr.low``, ``objective.metric``,
``budget.trials``).

:meth:`SearchSpace.suggest` is the define-by-run function OptunaSearch calls with an Optuna trial:
it only samples and returns ``{dotted config key: value}`` (with ``method.trees`` and
``method.depths`` as lists). :meth:`SearchSpace.config_for` applies such a mapping to the base
config and checks the result.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from raysearch.config import (
    ExperimentConfig,
    _parse_yaml,
    apply_overrides,
    config_from_dict,
    flatten,
    parse_override,
    read_config_dict,
    validate_with_data,
)
from trainables.errors import UserInputError, must
from trainables.names import check_folder_name
from trainables.readers import expanded, is_file, read_text, yaml_reason

__all__ = [
    "BASE_METRICS",
    "FINAL_METRICS",
    "DISTRIBUTIONS",
    "Budget",
    "Objective",
    "Param",
    "SCHEDULERS",
    "SearchSpace",
    "load_space",
]

#: Metrics every trial reports, whatever its trees.
BASE_METRICS = ("clean_leaf", "robust_leaf", "transfer", "worst_superclass", "loss")
#: The zero-shot suite's averages (validation split), reported when the base config has a suite.
ZEROSHOT_METRICS = ("zeroshot_clean", "zeroshot_robust")
#: Metrics measured only after a trial's last epoch (ASHA cannot compare trials on them); the
#: zero-shot metrics too, unless ``data.zeroshot_every_epoch`` is set.
FINAL_METRICS = ("transfer", "worst_superclass")
#: Reported, never selected on: the prefix of every test-split metric.
TEST_PREFIX = "test/"
#: Distribution types of ordinary parameters.
DISTRIBUTIONS = ("categorical", "int", "float", "fixed")
SCHEDULERS = ("asha", "none")
MODES = ("max", "min")

_TOP_KEYS = ("name", "base", "overrides", "objective", "budget", "space")
_BUDGET_KEYS = ("trials", "concurrency", "scheduler", "grace_epochs", "reduction_factor", "seed")
_PARAM_KEYS = {
    "categorical": ("type", "choices", "when"),
    "int": ("type", "low", "high", "step", "log", "when"),
    "float": ("type", "low", "high", "step", "log", "when"),
    "fixed": ("type", "value", "when"),
    "subset": ("type", "of", "min", "max", "when"),
    "depth": ("type", "low", "high", "per_tree", "when"),
}
_SEPARATOR = "+"
_MAX_SUBSETS = 4096
_MUST = re.compile(r"`([^`]+)` must be (.*), but got .*", re.DOTALL)
#: Config keys the special parameters set; writing them in `space` directly is refused.
_RESERVED = {"method.trees": "trees", "method.depths": "depth"}


# -- the parts of a search space ----------------------------------------------------------------


@dataclass(frozen=True)
class Objective:
    """One metric the search optimises, and whether higher (``max``) or lower is better."""

    metric: str
    mode: str


@dataclass(frozen=True)
class Budget:
    """How many trials run, how many at once, and how they are stopped early."""

    trials: int = 8
    concurrency: int | str = 1  # or "auto": as many trials as the cluster holds at once
    scheduler: str = "asha"
    grace_epochs: int = 1
    reduction_factor: int = 3
    seed: int = 0


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


@dataclass(frozen=True)
class SearchSpace:
    """A loaded and checked search space.

    Attributes:
        name: the search's name (prefix of the Optuna study name).
        base: the experiment config every trial starts from (overrides applied).
        objectives: one or two objectives.
        budget: trials, concurrency and early stopping.
        params: the parameters, in file order.
        base_dict: the base config as its raw nested mapping; trial values are applied to it, so
            the method defaults still follow ``method.name`` when that is searched.
        default_trees: the trees the base config's method aligns with (``depth`` uses them when
            no subset of trees is sampled).
    """

    name: str
    base: ExperimentConfig
    objectives: tuple[Objective, ...]
    budget: Budget
    params: tuple[Param, ...]
    base_dict: Mapping[str, Any] = field(repr=False, default_factory=dict)
    default_trees: tuple[str, ...] = ()

    @property
    def metrics(self) -> list[str]:
        return [objective.metric for objective in self.objectives]

    @property
    def modes(self) -> list[str]:
        return [objective.mode for objective in self.objectives]

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def max_epochs(self) -> int:
        """The most epochs a trial can run (``optim.epochs`` may itself be searched)."""
        highest = float(self.base.optim.epochs)
        for param in self.params:
            if param.name == "optim.epochs":
                values = [param.value] if param.kind == "fixed" else [*param.choices, param.high]
                highest = max([highest] + [float(v) for v in values if _finite(v)])
        return max(1, math.ceil(highest))

    @property
    def directions(self) -> list[str]:
        """The objectives' directions as Optuna names them (``maximize`` / ``minimize``)."""
        return ["maximize" if mode == "max" else "minimize" for mode in self.modes]

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Sample one trial's values with ``trial.suggest_*``: ``{dotted config key: value}``.

        The define-by-run function of OptunaSearch: it samples and returns, nothing else.
        """
        sampled: dict[str, Any] = {}
        result: dict[str, Any] = {}
        trees: list[str] | None = None
        for param in self.params:
            if not _active(param, sampled):
                continue
            if param.kind == "fixed":
                value = param.value
            elif param.kind in ("categorical", "subset"):
                value = trial.suggest_categorical(param.name, list(param.choices))
            elif param.kind == "int":
                value = trial.suggest_int(
                    param.name, param.low, param.high, step=param.step or 1, log=param.log
                )
            elif param.kind == "float":
                value = trial.suggest_float(
                    param.name, param.low, param.high, step=param.step, log=param.log
                )
            else:  # depth
                chosen = trees if trees is not None else list(self.default_trees)
                depths = [
                    trial.suggest_int(f"depth.{tree}", *param.ranges[tree]) for tree in chosen
                ]
                result["method.trees"] = chosen
                result["method.depths"] = depths
                sampled[param.name] = depths
                continue
            sampled[param.name] = value
            if param.kind == "subset":
                trees = value.split(_SEPARATOR)
                result["method.trees"] = trees
            else:
                result[param.name] = value
        return result

    def config_for(self, params: Mapping[str, Any]) -> ExperimentConfig:
        """The base config with ``params`` (as :meth:`suggest` returns them) applied, checked."""
        config = config_from_dict(apply_overrides(self.base_dict, params))
        validate_with_data(config)
        return config


def _active(param: Param, sampled: Mapping[str, Any]) -> bool:
    return all(name in sampled and _matches(sampled[name], values) for name, values in param.when)


def _matches(value: Any, accepted: tuple[Any, ...]) -> bool:
    # 1 == True in Python; a condition on a boolean must not accept the integer.
    return any(value == item and type(value) is type(item) for item in accepted) or any(
        _number(value) and _number(item) and value == item for item in accepted
    )


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _finite(value: Any) -> bool:
    return _number(value) and math.isfinite(value)


# -- loading --------------------------------------------------------------------------------


def _mapping(value: Any, where: str, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise must(where, what, value)
    return dict(value)


def _keys(section: Mapping[str, Any], where: str, allowed: tuple[str, ...]) -> None:
    for key in section:
        if key not in allowed:
            prefix = f"{where}." if where else ""
            raise must(f"{prefix}{key}", f"one of the keys [{', '.join(allowed)}]", key)


def load_space(path: str | Path) -> SearchSpace:
    """Read and check a search space file; nothing is started."""
    file = expanded(path)
    if not is_file(file):
        raise must("search space", "an existing YAML file", str(path))
    try:
        data = _parse_yaml(read_text(file), str(path), "search space")
    except yaml.YAMLError as error:
        raise must("search space", "valid YAML", f"<{path}: {yaml_reason(error)}>") from None
    return space_from_dict(data, file.parent)


def space_from_dict(data: Any, folder: str | Path = ".") -> SearchSpace:
    """Check a search space given as its nested mapping; ``base`` paths are relative to
    ``folder``."""
    data = _mapping(data, "search space", "a mapping with the keys name, base, objective, space")
    _keys(data, "", _TOP_KEYS)
    name = check_folder_name(data.get("name"), "name")

    base_dict = _base_dict(data.get("base"), data.get("overrides"), Path(folder))
    base = config_from_dict(base_dict)
    forest = validate_with_data(base)
    depths = {tree: forest[tree].depth for tree in forest.names}
    from trainables.methods import training_forest

    default_trees = tuple(base.method.trees or training_forest(base.method, forest).names)

    suite_datasets = ()
    if base.data.zeroshot_suite is not None:
        from trainables.suites import get_suite

        suite_datasets = [entry.dataset for entry in get_suite(base.data.zeroshot_suite).datasets]
    objectives = _objectives(data.get("objective"), depths, suite_datasets)
    budget = _budget(data.get("budget"))
    final_only = objectives[0].metric in FINAL_METRICS or (
        objectives[0].metric.startswith("zeroshot") and not base.data.zeroshot_every_epoch
    )
    if budget.scheduler == "asha" and final_only:
        raise must(
            "budget.scheduler",
            f"none when the first objective ({objectives[0].metric}) is only measured after the "
            "last epoch (ASHA compares trials on it after every epoch)",
            budget.scheduler,
        )
    params = _params(data.get("space"), base_dict, base, depths, default_trees)
    space = SearchSpace(
        name=name,
        base=base,
        objectives=objectives,
        budget=budget,
        params=params,
        base_dict=base_dict,
        default_trees=default_trees,
    )
    space.config_for(_representative(space))
    if budget.scheduler == "asha" and budget.grace_epochs >= space.max_epochs:
        raise must(
            "budget.grace_epochs",
            f"smaller than the most epochs a trial runs ({space.max_epochs}) for ASHA to stop "
            "a trial early (or use scheduler: none)",
            budget.grace_epochs,
        )
    return space


def _base_dict(base: Any, overrides: Any, folder: Path) -> dict[str, Any]:
    if overrides is None:
        overrides = []
    if isinstance(overrides, str) or not isinstance(overrides, list):
        raise must("overrides", "a list of key=value strings", overrides)
    for item in overrides:
        if not isinstance(item, str):
            raise must("overrides", "a list of key=value strings", item)
    if base is None or isinstance(base, Mapping):
        result: dict[str, Any] = dict(base or {})
        for item in overrides:
            key, value = parse_override(item)
            result = apply_overrides(result, {key: value})
        return result
    if not isinstance(base, str) or not base:
        raise must("base", "a config file (relative to the search space), a mapping or null", base)
    file = expanded(base)
    if not file.is_absolute():
        file = folder / file
    if not is_file(file):
        raise must("base", "an existing config file (relative to the search space)", base)
    return read_config_dict(file, overrides)


def _objectives(
    value: Any, depths: Mapping[str, int], suite_datasets: Sequence[str] = ()
) -> tuple[Objective, ...]:
    items = [value] if isinstance(value, Mapping) else value
    if not isinstance(items, list) or not 1 <= len(items) <= 2:
        raise must("objective", "one or two objectives {metric, mode}", value)
    allowed = list(BASE_METRICS) + [
        f"clean/{tree}/{level}" for tree, depth in depths.items() for level in range(depth + 1)
    ]
    if suite_datasets:
        allowed += list(ZEROSHOT_METRICS) + [
            f"zeroshot/{name}/{kind}" for name in suite_datasets for kind in ("clean", "robust")
        ]
    result = []
    for item in items:
        item = _mapping(item, "objective", "a mapping {metric, mode}")
        _keys(item, "objective", ("metric", "mode"))
        metric, mode = item.get("metric"), item.get("mode")
        if isinstance(metric, str) and metric.startswith(TEST_PREFIX):
            raise must(
                "objective.metric",
                "a validation metric (test/... numbers are reported, never selected on)",
                metric,
            )
        if metric not in allowed:
            shown = ", ".join(BASE_METRICS) + ", clean/<tree>/<level> of the base forest"
            if suite_datasets:
                shown += ", " + ", ".join(ZEROSHOT_METRICS) + ", zeroshot/<dataset>/<clean|robust>"
            else:
                shown += " (zeroshot_* need data.zeroshot_suite)"
            raise must("objective.metric", f"a reported metric ({shown})", metric)
        if mode not in MODES:
            raise must("objective.mode", f"one of {list(MODES)}", mode)
        result.append(Objective(metric, mode))
    if len(result) == 2 and result[0].metric == result[1].metric:
        raise must("objective.metric", "two different metrics", result[1].metric)
    return tuple(result)


def _budget(value: Any) -> Budget:
    section = _mapping(value, "budget", "a mapping of trials, concurrency, scheduler, ...")
    _keys(section, "budget", _BUDGET_KEYS)
    budget = Budget(**section)
    checked = (("trials", 1), ("grace_epochs", 1), ("reduction_factor", 2), ("seed", 0))
    if budget.concurrency != "auto":
        checked += (("concurrency", 1),)
    for key, low in checked:
        got = getattr(budget, key)
        if not _integer(got) or got < low:
            shown = f"an integer >= {low}" + (' or "auto"' if key == "concurrency" else "")
            raise must(f"budget.{key}", shown, got)
    if budget.scheduler not in SCHEDULERS:
        raise must("budget.scheduler", f"one of {list(SCHEDULERS)}", budget.scheduler)
    return budget


def _params(
    value: Any,
    base_dict: Mapping[str, Any],
    base: ExperimentConfig,
    depths: Mapping[str, int],
    default_trees: tuple[str, ...],
) -> tuple[Param, ...]:
    space = _mapping(value, "space", "a mapping of parameters")
    if not space:
        raise must("space", "at least one parameter", value)
    known = set(flatten(base))
    params: dict[str, Param] = {}
    candidates = default_trees  # the trees `depth` may be sampled for
    for name, spec in space.items():
        where = f"space.{name}"
        if not isinstance(name, str):
            raise must("space", "parameters named by strings", name)
        spec = _mapping(spec, where, "a mapping with a `type`")
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
        _keys(spec, where, _PARAM_KEYS[kind])
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
    section = _mapping(value, f"{where}.when", "a mapping {parameter: value or [values]}")
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
                if not _matches(item, other.choices):
                    raise must(
                        f"{where}.when.{name}", f"among the choices {list(other.choices)}", item
                    )
        elif other.kind == "fixed":
            pass
        elif other.kind == "depth":
            raise must(f"{where}.when", "a parameter other than `depth`", name)
        else:
            for item in values:
                if not (_number(item) and other.low <= item <= other.high):
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
    if not _integer(low) or not 1 <= low <= len(of):
        raise must(f"{where}.min", f"an integer in [1, {len(of)}]", low)
    if not _integer(high) or not low <= high <= len(of):
        raise must(f"{where}.max", f"an integer in [{low}, {len(of)}] (min to len(of))", high)
    count = sum(math.comb(len(of), size) for size in range(low, high + 1))
    if count > _MAX_SUBSETS:
        raise must(where, f"at most {_MAX_SUBSETS} subsets of trees", count)
    choices = tuple(
        _SEPARATOR.join(subset)
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
    per_tree = _mapping(spec.get("per_tree"), f"{where}.per_tree", "a mapping {tree: {low, high}}")
    for tree in per_tree:
        if tree not in candidates:
            raise must(
                f"{where}.per_tree", f"names of the candidate trees [{', '.join(candidates)}]", tree
            )
    ranges: dict[str, tuple[int, int]] = {}
    for tree in candidates:
        if tree in per_tree:
            inner = _mapping(per_tree[tree], f"{where}.per_tree.{tree}", "a mapping {low, high}")
            _keys(inner, f"{where}.per_tree.{tree}", ("low", "high"))
            field_prefix, source = f"{where}.per_tree.{tree}", inner
        else:
            field_prefix, source = where, spec
        low, high = source.get("low", 1), source.get("high", depths[tree])
        top = depths[tree]
        if not _integer(low) or not 1 <= low <= top:
            raise must(f"{field_prefix}.low", f"an integer in [1, {top}] for tree `{tree}`", low)
        if not _integer(high) or not low <= high <= top:
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
        if _matches(item, tuple(choices[:index])):
            raise must(f"{where}.choices", "distinct values", item)
    return Param(name, "categorical", choices=tuple(choices), when=when)


def _numeric(spec: Mapping[str, Any], where: str, name: str, kind: str, when) -> Param:
    check, what = (_integer, "an integer") if kind == "int" else (_finite, "a finite number")
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


def _representative(space: SearchSpace) -> dict[str, Any]:
    """One trial's values: first choices and low ends, following the conditions."""

    class _First:
        def suggest_categorical(self, name, choices):
            return choices[0]

        def suggest_int(self, name, low, high, step=1, log=False):
            return low

        def suggest_float(self, name, low, high, step=None, log=False):
            return low

    return space.suggest(_First())
