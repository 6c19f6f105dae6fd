"""The experiment config: one typed schema, loaded from YAML with ``key=value`` overrides.

A config is an :class:`ExperimentConfig`. Its method, head, loss, training attack, optimiser and
evaluation attack are the science's own dataclasses (:mod:`trainables.methods`,
:mod:`trainables.training`, :mod:`trainables.evaluate`), so every field is defined and checked in
one place; this module adds the driver-side sections (data, model, scaling, checkpoint, MLflow).

The YAML layout (``search_spaces/embedded-experiment.yaml`` is a complete, commented example)::

    name: null            # job name; null = "<method>-<content hash>" (job_name)
    seed: 0               # seeds the shuffling, the attacks and the evaluation
    method: {name, trees, depths, templates}      MethodSettings
    head: {...}                                   HeadSettings (method.head)
    loss: {..., margins: {...}}                   HierarchicalSettings (method.loss)
    attack: {...}                                 TrainingAttack (method.attack)
    optim: {...}                                  OptimSettings (seed: the top-level seed)
    evaluation: {eps, steps, step_size, norm}     AttackSettings (seed: the top-level seed)
    data: {dataset, root, trees, train_size, eval_samples, zeroshot_suite, zeroshot_samples,
           zeroshot_every_epoch}
    model: {name, pretrained}
    scaling: {workers, cpus_per_worker, gpus_per_worker}
    checkpoint: {storage_path, keep, max_failures}
    mlflow: {tracking_uri, experiment}

``head``, ``loss`` and ``attack`` are written as top-level sections, so the dotted key a user
writes (``head.temperature``, ``attack.eps``) is the name the science uses in its errors. Their
defaults follow ``method.name`` (:func:`trainables.methods.method_settings`: the hyperbolic head
for ``hrz``/``hrz-forest``, the euclidean head and a leaf attack for the baselines); the user's
fields are applied on top.

Checks run in two stages, both before anything starts: :func:`config_from_dict` checks keys,
types and values (one error, the first, as one line); :func:`validate_with_data` loads the class
trees and checks what depends on them. Every error is a
:class:`~trainables.errors.UserInputError` of the form "`field` must be <constraint>, but got
<value>.".

Importing this module is cheap: the science (and torch with it) is imported on first use.
"""

from __future__ import annotations

import functools
import os
import re
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from trainables.cache import content_key
from trainables.errors import UserInputError, must
from trainables.names import RULE as FOLDER_NAME_RULE
from trainables.names import is_folder_name
from trainables.numbers import is_finite_number, is_integer
from trainables.readers import (
    RepeatedKey,
    YamlRefused,
    expanded,
    is_file,
    load_yaml,
    read_text,
    yaml_reason,
)

if TYPE_CHECKING:
    from trainables.evaluate import AttackSettings
    from trainables.hierarchy.tree import Forest
    from trainables.methods import MethodSettings
    from trainables.training import OptimSettings

__all__ = [
    "CheckpointSettings",
    "DataSettings",
    "ExperimentConfig",
    "MlflowSettings",
    "ModelSettings",
    "ScalingSettings",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "data_forest",
    "dump_config",
    "flatten",
    "job_name",
    "load_config",
    "looks_like_override",
    "parse_override",
    "read_config_dict",
    "validate_with_data",
]

DEFAULT_METHOD = "hrz-forest"

#: The class trees a dataset uses when ``data.trees`` is null.
DEFAULT_TREES: dict[str, str | tuple[str, ...]] = {
    "embedded": "embedded",
    "cifar10": "cifar10-wordnet",
    "cifar100": ("cifar100-wordnet", "cifar100-coarse"),
}
#: The zero-shot suite a dataset's jobs evaluate when ``data.zeroshot_suite`` is "auto".
DEFAULT_SUITES: dict[str, str] = {"embedded": "embedded-zeroshot"}

#: Fields of MethodSettings written as top-level sections of their own.
_HOISTED = ("head", "loss", "attack")

#: Per section: fields of its dataclass that the YAML does not set, and where they are set.
_HIDDEN: dict[str, dict[str, str]] = {
    "method": {key: f"set in the top-level section `{key}`" for key in _HOISTED},
    "optim": {"seed": "set as the top-level `seed` (one seed for the whole run)"},
    "evaluation": {
        "seed": "set as the top-level `seed` (one seed for the whole run)",
        "samples": "set as `data.eval_samples`",
    },
}

_OVERRIDE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_MUST = re.compile(r"`([^`]+)`( must be .*)", re.DOTALL)


# -- the driver-side sections -----------------------------------------------------------------


@dataclass(frozen=True)
class DataSettings:
    """What the model is fine-tuned and evaluated on.

    Attributes:
        dataset: ``"embedded"`` (the procedurally generated default), ``"cifar10"`` or
            ``"cifar100"`` (torchvision files under ``root``; never downloaded).
        root: folder holding the torchvision datasets; null = the cache folder. Ignored by the
            embedded dataset.
        trees: the class trees: a shipped name (``embedded``, ``cifar10-wordnet``, ...), one tree
            of a shipped forest (``embedded/form``), a tree file, or a list of these (joined into
            one forest). Null = the dataset's default (:data:`DEFAULT_TREES`).
        train_size: training images used; null = the whole training split.
        eval_samples: images evaluated per split (clean and under attack): the validation
            split every epoch (what selection reads), the test split once at the end (reported
            as ``test/...``). Default 1000.
        zeroshot_suite: the zero-shot suite evaluated after the last epoch (``zeroshot_clean``,
            ``zeroshot_robust``, per dataset ``zeroshot/<dataset>/...``); "auto" = the
            dataset's default (:data:`DEFAULT_SUITES`), null = none.
        zeroshot_samples: images per suite dataset and split. Default 200.
        zeroshot_every_epoch: evaluate the suite after every epoch, not only the last.
    """

    dataset: str = "embedded"
    root: str | None = None
    trees: str | tuple[str, ...] | None = None
    train_size: int | None = None
    eval_samples: int = 1000
    zeroshot_suite: str | None = "auto"
    zeroshot_samples: int = 200
    zeroshot_every_epoch: bool = False

    def __post_init__(self) -> None:
        from trainables.data.registry import available_datasets

        datasets = available_datasets()
        if self.dataset not in datasets:
            raise must("data.dataset", f"one of {list(datasets)}", self.dataset)
        if self.root is not None and not self.root:
            raise must("data.root", "a folder or null", self.root)
        if self.trees is None:
            if self.dataset not in DEFAULT_TREES:
                raise must("data.trees", f"given for dataset {self.dataset!r}", None)
            object.__setattr__(self, "trees", DEFAULT_TREES[self.dataset])
        sources = (self.trees,) if isinstance(self.trees, str) else self.trees
        if not sources or not all(sources):
            raise must(
                "data.trees", "a shipped tree name or a non-empty list of trees", _shown(self.trees)
            )
        if self.train_size is not None and self.train_size < 1:
            raise must("data.train_size", ">= 1 or null", self.train_size)
        if self.eval_samples < 1:
            raise must("data.eval_samples", ">= 1", self.eval_samples)
        from trainables.suites import SUITES

        if self.zeroshot_suite == "auto":
            object.__setattr__(self, "zeroshot_suite", DEFAULT_SUITES.get(self.dataset))
        if self.zeroshot_suite is not None and self.zeroshot_suite not in SUITES:
            raise must(
                "data.zeroshot_suite", f"one of {['auto', *SUITES]} or null", self.zeroshot_suite
            )
        if self.zeroshot_samples < 1:
            raise must("data.zeroshot_samples", ">= 1", self.zeroshot_samples)


@dataclass(frozen=True)
class ModelSettings:
    """The CLIP model fine-tuned.

    Attributes:
        name: ``"embedded"`` (default: the tiny base model pretrained on the embedded dataset and
            cached) or an open_clip architecture such as ``ViT-B-32``.
        pretrained: an open_clip pretrained tag (``openai``), a local weights file, or null
            (the cached base for ``embedded``; random weights otherwise).
    """

    name: str = "embedded"
    pretrained: str | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise must("model.name", "'embedded' or an open_clip model name", self.name)
        if self.pretrained is not None and not self.pretrained:
            raise must("model.pretrained", "a pretrained tag, a weights file or null", "")


@dataclass(frozen=True)
class ScalingSettings:
    """The Ray Train workers of one trial.

    Attributes:
        workers: data-parallel workers (each gets ``optim.batch_size // workers`` images). >= 1.
        cpus_per_worker: CPUs reserved per worker, > 0 (fractions allowed).
        gpus_per_worker: GPUs per worker, >= 0 (fractions allowed); 0 trains on the CPU.
        in_process: a search trial with one worker trains in the trial's own process, without
            a Ray Train controller and worker group to start (seconds less per trial; Tune
            restarts a failed trial, which resumes from its last checkpoint). False: a Ray Train
            worker group, which restarts a failed worker without restarting the trial. Jobs of
            ``raysearch train`` and trials with several workers always use a worker group.
    """

    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    in_process: bool = True

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise must("scaling.workers", ">= 1", self.workers)
        if not self.cpus_per_worker > 0:
            raise must("scaling.cpus_per_worker", "> 0", self.cpus_per_worker)
        if not self.gpus_per_worker >= 0:
            raise must("scaling.gpus_per_worker", ">= 0", self.gpus_per_worker)

    @property
    def use_gpu(self) -> bool:
        return self.gpus_per_worker > 0


@dataclass(frozen=True)
class CheckpointSettings:
    """Where trials keep their checkpoints, and how failures are retried.

    Attributes:
        storage_path: a local folder (relative to the working directory) or a URI such as
            ``s3://bucket/runs``; on a cluster, storage every node can reach.
        keep: checkpoints kept per trial (the latest ones), >= 1.
        max_failures: times a failed trial is restarted from its last checkpoint, >= 0.
    """

    storage_path: str = "./ray_results"
    keep: int = 2
    max_failures: int = 2

    def __post_init__(self) -> None:
        if not self.storage_path:
            raise must("checkpoint.storage_path", "a folder or a URI", self.storage_path)
        if self.keep < 1:
            raise must("checkpoint.keep", ">= 1", self.keep)
        if self.max_failures < 0:
            raise must("checkpoint.max_failures", ">= 0", self.max_failures)

    def resolved_storage_path(self) -> str:
        """The storage path as Ray needs it: URIs as given, local folders made absolute."""
        if "://" in self.storage_path:
            return self.storage_path
        return str(Path(self.storage_path).expanduser().resolve())


@dataclass(frozen=True)
class MlflowSettings:
    """Where every trial is logged.

    Attributes:
        tracking_uri: the MLflow tracking server or store; null = ``$MLFLOW_TRACKING_URI``, else
            ``sqlite:///mlflow.db`` in the working directory.
        experiment: the MLflow experiment of the search.
    """

    tracking_uri: str | None = None
    experiment: str = "raysearch"

    def __post_init__(self) -> None:
        if self.tracking_uri is not None and not self.tracking_uri:
            raise must("mlflow.tracking_uri", "a tracking URI or null", "")
        if not self.experiment:
            raise must("mlflow.experiment", "a non-empty name", self.experiment)

    def resolved_tracking_uri(self) -> str:
        """The URI to use now; the default store's path is absolute (trials run elsewhere)."""
        if self.tracking_uri:
            return self.tracking_uri
        from_env = os.environ.get("MLFLOW_TRACKING_URI")
        if from_env:
            return from_env
        return f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def _default_method() -> MethodSettings:
    from trainables.methods import method_settings

    return method_settings(DEFAULT_METHOD)


def _default_optim() -> OptimSettings:
    from trainables.training import OptimSettings

    return OptimSettings()


def _default_evaluation() -> AttackSettings:
    from trainables.evaluate import AttackSettings

    return AttackSettings()


@dataclass(frozen=True)
class ExperimentConfig:
    """One experiment: a fine-tuning method, its data and model, and where the run goes.

    Attributes:
        name: the job name (1-64 characters from ``A-Z a-z 0-9 . _ -``); null = derived from
            the content by :func:`job_name`.
        seed: seeds the shuffling, the training attacks and the evaluation attack (it is copied
            into ``optim.seed`` and ``evaluation.seed``). >= 0.
        method: the method with its head, loss, training attack and prompt templates.
        optim: optimiser, schedule, batch and epochs.
        evaluation: the PGD attack of the robust evaluation.
        data, model, scaling, checkpoint, mlflow: see their classes.
    """

    name: str | None = None
    seed: int = 0
    method: MethodSettings = field(default_factory=_default_method)
    optim: OptimSettings = field(default_factory=_default_optim)
    evaluation: AttackSettings = field(default_factory=_default_evaluation)
    data: DataSettings = field(default_factory=DataSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    scaling: ScalingSettings = field(default_factory=ScalingSettings)
    checkpoint: CheckpointSettings = field(default_factory=CheckpointSettings)
    mlflow: MlflowSettings = field(default_factory=MlflowSettings)

    def __post_init__(self) -> None:
        from trainables.attacks import NORMS
        from trainables.training import check_seed

        if self.name is not None and not is_folder_name(self.name):
            raise must("name", f"{FOLDER_NAME_RULE}; or null", self.name)
        check_seed(self.seed, "seed")
        trees = self.method.trees
        if trees is not None and not trees:
            raise must("method.trees", "a non-empty list of tree names", list(trees))
        if trees is not None and len(set(trees)) != len(trees):
            raise must("method.trees", "distinct tree names", list(trees))
        templates = self.method.templates
        if not templates or any("{}" not in template for template in templates):
            raise must(
                "method.templates",
                "a non-empty list of strings with a {} placeholder",
                list(templates),
            )
        if self.evaluation.norm not in NORMS:
            raise must("evaluation.norm", f"one of {list(NORMS)}", self.evaluation.norm)
        step_size = self.evaluation.step_size
        if step_size is not None and not step_size > 0:
            raise must("evaluation.step_size", "> 0 or null", step_size)
        batch = self.optim.batch_size
        if batch < self.scaling.workers:
            raise must(
                "optim.batch_size",
                f">= scaling.workers ({self.scaling.workers}) so that every worker gets images",
                batch,
            )
        train_size = self.data.train_size
        if train_size is not None and train_size < batch:
            raise must("data.train_size", f">= optim.batch_size ({batch}) or null", train_size)
        # One seed for the whole run.
        if self.optim.seed != self.seed:
            object.__setattr__(self, "optim", replace(self.optim, seed=self.seed))
        if self.evaluation.seed != self.seed:
            object.__setattr__(self, "evaluation", replace(self.evaluation, seed=self.seed))


# -- reading YAML and overrides ---------------------------------------------------------------


def parse_yaml(text: str, where: str, field: str = "config"):
    """Parse strict YAML; a document past the bounds of :func:`trainables.readers.load_yaml`
    (an alias bomb, deep nesting, a list as a key) is refused before it is built.

    ``where`` names the source (a file, an override) and ``field`` the setting in the error;
    text that is not YAML raises ``yaml.YAMLError`` for the caller to phrase.
    """
    try:
        return load_yaml(text)
    except YamlRefused as refused:
        raise must(field, f"YAML {refused.constraint}", f"<{where}: {refused.detail}>") from None
    except RepeatedKey as repeated:
        raise must(
            field,
            "YAML with each key once per section",
            f"<`{repeated.key}` repeated at line {repeated.line} of {where}>",
        ) from None


def looks_like_override(text: str) -> bool:
    """Whether ``text`` reads as ``key=value`` (a dotted key), e.g. ``data.trees=embedded/form``."""
    key, sep, _ = text.partition("=")
    return bool(sep) and _OVERRIDE_KEY.fullmatch(key.strip()) is not None


def parse_override(text: str) -> tuple[str, Any]:
    """``"optim.lr=1e-3"`` -> ``("optim.lr", 0.001)``: a dotted key and a YAML value."""
    if not looks_like_override(text):
        raise must("override", "of the form key=value", text)
    key, _, raw = text.partition("=")
    key = key.strip()
    try:
        return key, parse_yaml(raw, f"override {key}", key)
    except yaml.YAMLError:
        raise must(key, "a YAML value", raw) from None


def apply_overrides(data: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the nested mapping ``data`` with ``{dotted key: value}`` set, in order."""
    result = _plain(data)
    for dotted, value in values.items():
        parts = dotted.split(".")
        node = result
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                section = ".".join(parts[: depth + 1])
                raise must(section, f"a section to set `{dotted}` in", child)
            node = child
        node[parts[-1]] = _plain(value)
    return result


def read_config_dict(path: str | Path | None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The raw nested mapping of a YAML file (None: empty) with ``key=value`` overrides applied.

    Nothing is checked but the syntax; :func:`config_from_dict` turns it into a config. Keeping
    the raw mapping lets later values (a trial's parameters) be applied with the method defaults
    still following ``method.name``.
    """
    data: Any = {}
    if path is not None:
        file = expanded(path)
        if not is_file(file):
            raise must("config", "an existing YAML file", str(path))
        text = read_text(file)
        try:
            data = parse_yaml(text, str(path))
        except yaml.YAMLError as error:
            raise must("config", "valid YAML", f"<{path}: {yaml_reason(error)}>") from None
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise must("config", "a mapping of sections such as method, optim and data", data)
    for text in overrides:
        key, value = parse_override(text)
        data = apply_overrides(data, {key: value})
    return _plain(data)


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Load and check a config: a YAML file (None: all defaults) and ``key=value`` overrides.

    Override values are YAML: ``optim.lr=1e-3``, ``method.trees=[form,corners]``,
    ``loss.margins.shape=linear``, ``model.pretrained=null``.
    """
    return config_from_dict(read_config_dict(path, overrides))


# -- the converter ----------------------------------------------------------------------------


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
    if cls.__module__ == __name__:
        return typing.get_type_hints(cls, localns=_science_names())
    return typing.get_type_hints(cls)


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _shown(value: Any) -> Any:
    """A value as the user wrote it (lists, not tuples)."""
    return list(value) if isinstance(value, tuple) else value


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
        raise must(path, _describe(hint), _shown(value)) from None


def _section(data: Any, path: str) -> dict[str, Any]:
    """A section's mapping; an empty section (``head:`` with nothing below) keeps the defaults."""
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise must(path or "config", "a mapping of settings", _shown(data))
    return dict(data)


def _check_keys(
    section: Mapping[str, Any], path: str, allowed: Iterable[str], hidden: Mapping[str, str]
) -> None:
    allowed = sorted(allowed)
    for key, value in section.items():
        if key in hidden:
            raise must(_join(path, key), hidden[key], _shown(value))
        if key not in allowed:
            raise must(_join(path, key), f"one of the settings [{', '.join(allowed)}]", key)


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
        name = _join(path, name)
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
    hidden = _HIDDEN.get(path, {})
    hints = _hints(cls)
    _check_keys(
        section, path, [f.name for f in fields(cls) if f.init and f.name not in hidden], hidden
    )
    values = dict(extra or {})
    for key, raw in section.items():
        hint, where = hints[key], _join(path, key)
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
        [f.name for f in fields(MethodSettings) if f.init and f.name not in _HOISTED],
        _HIDDEN["method"],
    )
    hints = _hints(MethodSettings)
    hoisted = {
        key: _build(hints[key], data.get(key), key, base=getattr(base, key)) for key in _HOISTED
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
    top = [f.name for f in fields(ExperimentConfig)] + list(_HOISTED)
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


# -- writing ----------------------------------------------------------------------------------


def _plain(value: Any, skip: Iterable[str] = ()) -> Any:
    """Nested dicts, lists and scalars (YAML- and JSON-safe)."""
    if is_dataclass(value) and not isinstance(value, type):
        return {
            item.name: _plain(getattr(value, item.name))
            for item in fields(value)
            if item.init and item.name not in skip
        }
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    return value


def config_to_dict(config: ExperimentConfig) -> dict[str, Any]:
    """The nested mapping of ``config`` in the YAML layout; ``config_from_dict`` inverts it."""
    result: dict[str, Any] = {"name": config.name, "seed": config.seed}
    result["method"] = _plain(config.method, skip=_HOISTED)
    for key in _HOISTED:
        result[key] = _plain(getattr(config.method, key))
    for key in ("optim", "evaluation", "data", "model", "scaling", "checkpoint", "mlflow"):
        result[key] = _plain(getattr(config, key), skip=_HIDDEN.get(key, {}))
    return result


def dump_config(config: ExperimentConfig) -> str:
    """``config`` as YAML text that :func:`load_config` reads back to an equal config."""
    return yaml.safe_dump(config_to_dict(config), sort_keys=False)


def flatten(config: ExperimentConfig) -> dict[str, str | int | float | bool | None]:
    """``{"optim.lr": 0.0005, "method.trees": "[form, corners]", ...}`` (MLflow params).

    Lists are written in YAML flow style, so every entry is also a valid override.
    """
    flat: dict[str, str | int | float | bool | None] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(_join(prefix, key), item)
        elif isinstance(value, list):
            flat[prefix] = yaml.safe_dump(value, default_flow_style=True, width=1 << 16).strip()
        else:
            flat[prefix] = value

    walk("", config_to_dict(config))
    return flat


def job_name(config: ExperimentConfig) -> str:
    """The given name, else ``"<method>-<8 hex digits of the content>"`` (stable)."""
    if config.name is not None:
        return config.name
    content = config_to_dict(config)
    del content["name"]
    return f"{config.method.name}-{content_key(content, length=8)}"


# -- checks that need the trees ---------------------------------------------------------------


def data_forest(data: DataSettings) -> Forest:
    """The forest of ``data.trees``, its leaves in the dataset's label order."""
    from trainables.data.class_lists import dataset_classes
    from trainables.hierarchy.shipped import SHIPPED, resolve
    from trainables.hierarchy.tree import Forest

    sources = (data.trees,) if isinstance(data.trees, str) else tuple(data.trees or ())
    trees = []
    for source in sources:
        shipped, _, tree = source.partition("/")
        known = source in SHIPPED or (shipped in SHIPPED and tree)
        if not known and not is_file(expanded(source)):
            raise must(
                "data.trees",
                f"shipped trees ({', '.join(SHIPPED)}), a shipped forest's tree such as "
                "embedded/form, or existing tree files",
                source,
            )
        loaded = resolve(source)
        trees.extend(loaded.trees if isinstance(loaded, Forest) else [loaded])
    forest = Forest(trees)
    classes = dataset_classes(data.dataset)
    if set(forest.leaves) != set(classes):
        raise must(
            "data.trees",
            f"trees whose leaves are the {len(classes)} classes of {data.dataset}",
            _shown(data.trees),
        )
    return Forest(tree.with_leaf_order(classes) for tree in forest)


def validate_with_data(config: ExperimentConfig) -> Forest:
    """Load the class trees and check the method's trees and depths against them.

    Returns the whole forest of ``data.trees`` (leaves in the dataset's label order): the
    method selects its trees from it (:func:`trainables.methods.training_forest`, called by
    ``build_method``) and the evaluation scores every tree of it.
    """
    from trainables.backbone import pretrained_file
    from trainables.methods import training_forest
    from trainables.readers import check_weights_file

    forest = data_forest(config.data)
    method = config.method
    if method.trees is not None:
        if not method.trees:
            raise must("method.trees", "a non-empty list of tree names", [])
        for name in method.trees:
            if name not in forest:
                raise must("method.trees", f"names of trees in [{', '.join(forest.names)}]", name)
        for name, depth in zip(method.trees, method.depths or (), strict=False):
            top = forest[name].depth
            if not 1 <= depth <= top:
                raise must("method.depths", f"between 1 and {top} for tree `{name}`", depth)
    training_forest(method, forest)
    weights = pretrained_file(config.model.name, config.model.pretrained)
    if weights is not None:  # read now, without running any code in it, not in a Ray worker
        check_weights_file(weights, "model.pretrained")
    if config.data.zeroshot_suite is not None:
        from trainables.suites import check_disjoint, get_suite

        check_disjoint(get_suite(config.data.zeroshot_suite), forest)
    return forest
