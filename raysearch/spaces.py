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

Checks (all in :func:`load_space`; the parameters' own in :mod:`raysearch.space_params`):
unknown keys at every level, distributions and their bounds, every parameter path and every
value a parameter can take (each choice, both ends of a range, the fixed value) applied to the
base config and built, ``when`` references, tree names and depths against the base config's
forest, objectives and budget, and one representative trial (first choices, low ends) built and
checked against the forest. Errors are :class:`~trainables.errors.UserInputError` with one line,
"`field` must be ..., but got ....", named by where the mistake is in the file
(``space.optim.lr.low``, ``objective.metric``, ``budget.trials``).

:meth:`SearchSpace.suggest` is the define-by-run function OptunaSearch calls with an Optuna trial:
it only samples and returns ``{dotted config key: value}`` (with ``method.trees`` and
``method.depths`` as lists). :meth:`SearchSpace.config_for` applies such a mapping to the base
config and checks the result.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from raysearch.config import (
    ExperimentConfig,
    apply_overrides,
    config_from_dict,
    parse_override,
    parse_yaml,
    read_config_dict,
    validate_with_data,
)
from raysearch.space_params import (
    DISTRIBUTIONS,
    SUBSET_SEPARATOR,
    Param,
    check_keys,
    is_active,
    mapping_of,
    parse_params,
)
from trainables.errors import must
from trainables.names import check_folder_name
from trainables.numbers import is_finite_number, is_integer
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
SCHEDULERS = ("asha", "none")
MODES = ("max", "min")
_TOP_KEYS = ("name", "base", "overrides", "objective", "budget", "space")
_BUDGET_KEYS = ("trials", "concurrency", "scheduler", "grace_epochs", "reduction_factor", "seed")


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
                highest = max([highest] + [float(v) for v in values if is_finite_number(v)])
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
            if not is_active(param, sampled):
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
                trees = value.split(SUBSET_SEPARATOR)
                result["method.trees"] = trees
            else:
                result[param.name] = value
        return result

    def config_for(self, params: Mapping[str, Any]) -> ExperimentConfig:
        """The base config with ``params`` (as :meth:`suggest` returns them) applied, checked."""
        config = config_from_dict(apply_overrides(self.base_dict, params))
        validate_with_data(config)
        return config


def load_space(path: str | Path) -> SearchSpace:
    """Read and check a search space file; nothing is started."""
    file = expanded(path)
    if not is_file(file):
        raise must("search space", "an existing YAML file", str(path))
    try:
        data = parse_yaml(read_text(file), str(path), "search space")
    except yaml.YAMLError as error:
        raise must("search space", "valid YAML", f"<{path}: {yaml_reason(error)}>") from None
    return space_from_dict(data, file.parent)


def space_from_dict(data: Any, folder: str | Path = ".") -> SearchSpace:
    """Check a search space given as its nested mapping; ``base`` paths are relative to
    ``folder``."""
    data = mapping_of(data, "search space", "a mapping with the keys name, base, objective, space")
    check_keys(data, "", _TOP_KEYS)
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

        suite_datasets = [entry.key for entry in get_suite(base.data.zeroshot_suite).datasets]
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
    params = parse_params(data.get("space"), base_dict, base, depths, default_trees)
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
        item = mapping_of(item, "objective", "a mapping {metric, mode}")
        check_keys(item, "objective", ("metric", "mode"))
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
    section = mapping_of(value, "budget", "a mapping of trials, concurrency, scheduler, ...")
    check_keys(section, "budget", _BUDGET_KEYS)
    budget = Budget(**section)
    checked = (("trials", 1), ("grace_epochs", 1), ("reduction_factor", 2), ("seed", 0))
    if budget.concurrency != "auto":
        checked += (("concurrency", 1),)
    for key, low in checked:
        got = getattr(budget, key)
        if not is_integer(got) or got < low:
            shown = f"an integer >= {low}" + (' or "auto"' if key == "concurrency" else "")
            raise must(f"budget.{key}", shown, got)
    if budget.scheduler not in SCHEDULERS:
        raise must("budget.scheduler", f"one of {list(SCHEDULERS)}", budget.scheduler)
    return budget


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
