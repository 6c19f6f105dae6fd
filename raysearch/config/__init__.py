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

The package: :mod:`~raysearch.config.schema` (the sections), :mod:`~raysearch.config.reading`
(YAML and overrides), :mod:`~raysearch.config.building` (the checked build),
:mod:`~raysearch.config.writing` (mapping, YAML, params, job name) and
:mod:`~raysearch.config.data` (checks against the trees); every public name is importable from
here. Importing it is cheap: the science (and torch with it) is imported on first use.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from raysearch.config.building import config_from_dict
from raysearch.config.data import data_forest, validate_with_data
from raysearch.config.reading import (
    apply_overrides,
    looks_like_override,
    parse_override,
    parse_yaml,
    read_config_dict,
)
from raysearch.config.schema import (
    DEFAULT_METHOD,
    DEFAULT_SUITES,
    DEFAULT_TREES,
    CheckpointSettings,
    DataSettings,
    ExperimentConfig,
    MlflowSettings,
    ModelSettings,
    ScalingSettings,
)
from raysearch.config.writing import config_to_dict, dump_config, flatten, job_name

__all__ = [
    "DEFAULT_METHOD",
    "DEFAULT_SUITES",
    "DEFAULT_TREES",
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
    "parse_yaml",
    "parse_override",
    "read_config_dict",
    "validate_with_data",
]


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Load and check a config: a YAML file (None: all defaults) and ``key=value`` overrides.

    Override values are YAML: ``optim.lr=1e-3``, ``method.trees=[form,corners]``,
    ``loss.margins.shape=linear``, ``model.pretrained=null``.
    """
    return config_from_dict(read_config_dict(path, overrides))
