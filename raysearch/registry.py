"""Promoting a trial to the MLflow Model Registry.

:func:`choose_trial` picks the trial of a search (best by a metric, under constraints, or one
named run) and refuses one that cannot become a model: FAILED, pruned, unfinished or without a
checkpoint. :func:`promote` packages it (:mod:`raysearch.model_package`), logs it into the
trial's run as a pyfunc model whose code is ``raysearch/pyfunc_entry.py`` (nothing pickled),
registers it as a new version of the model with lineage tags (trial run, search run, job, config
hash, code version), and moves the alias to it.
Promoting the same run again finds its version instead of creating another.

No package index has ``raysearch``, so the model carries the ``raysearch`` and ``trainables``
code it runs (MLflow's ``code_paths``, put on ``sys.path`` when it loads) and requires only the
third-party distributions that code imports (:func:`inference_requirements`): a fresh
environment (``mlflow models serve --env-manager virtualenv``) installs those from an index.

Model names and aliases are checked before anything reaches MLflow (:func:`check_model_name`,
:func:`check_alias`): a name is what ``models:/NAME@ALIAS`` URIs and registry filter strings
carry, so it keeps to letters, digits and ``. _ -``.
"""

from __future__ import annotations

import importlib.metadata
import math
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from raysearch import tracking
from trainables.errors import must

SOURCE_RUN_TAG = "raysearch.trial_run"
ENTRY_FILE = Path(__file__).with_name("pyfunc_entry.py")
MODEL_ARTIFACT = "model"
#: The third-party distributions that loading and predicting import (traced from
#: pyfunc_entry.py through load_classifier and predict); each brings its own dependencies.
#: torchvision is open_clip's import, pinned too: a torchvision of another torch fails to load.
INFERENCE_DISTRIBUTIONS = (
    "mlflow",
    "numpy",
    "open_clip_torch",
    "pandas",
    "pillow",
    "pyyaml",
    "safetensors",
    "torch",
    "torchvision",
)
#: Registered model names: a subset of MLflow's (no ``/`` or ``:``, no path tricks) that needs no
#: quoting in ``models:/NAME@ALIAS`` URIs or filter strings; dots allow ``catalog.schema.model``.
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]{0,255}")
#: MLflow's alias rule: letters, digits, ``_`` and ``-``, at most 255 characters.
_ALIAS = re.compile(r"[A-Za-z0-9_\-]{1,255}")
_VERSION_ALIAS = re.compile(r"[vV][0-9]+")


def check_model_name(name: str) -> str:
    """``name`` when it can be a registered model's name; one line otherwise."""
    if not _MODEL_NAME.fullmatch(name) or ".." in name:
        raise must(
            "--name",
            "1 to 256 characters from A-Z a-z 0-9 . _ - starting with a letter or digit",
            name,
        )
    return name


def check_alias(alias: str) -> str:
    """``alias`` when MLflow accepts it as a model alias; one line otherwise."""
    if not _ALIAS.fullmatch(alias):
        raise must("--alias", "1 to 255 characters from A-Z a-z 0-9 _ -", alias)
    if alias.lower() == "latest" or _VERSION_ALIAS.fullmatch(alias):
        raise must("--alias", "not `latest` or v<number> (MLflow reserves them)", alias)
    return alias


@dataclass(frozen=True)
class Promotion:
    name: str
    version: str
    alias: str
    run_id: str
    search_run_id: str | None
    created: bool
    model_uri: str


def find_search_run(client, experiment_id: str, search: str):
    """The parent run of a search, by its run id or its name."""
    run = tracking.find_search_run(client, experiment_id, search)
    if run is None or not tracking.is_search_run(run):
        raise must("--search", "the run id or name of a search in this MLflow store", search)
    return run


def refusal(run) -> str | None:
    """Why ``run`` cannot be promoted (None when it can)."""
    status = run.data.tags.get(tracking.STATUS_TAG)
    if run.info.status == "FAILED" or status == "failed":
        return "it FAILED"
    if status == "pruned":
        return "it was pruned (stopped before its last epoch)"
    if run.info.status != "FINISHED":
        return f"it has not finished (status {run.info.status})"
    return None


def _checkpointed(client, run_id: str) -> bool:
    try:
        files = client.list_artifacts(run_id, "checkpoint")
    except tracking.store_errors():  # an artifact store that cannot list: no checkpoint
        return False
    return any(item.path.endswith("state.pt") for item in files)


def choose_trial(
    client,
    search_run,
    *,
    metric: str | None = None,
    mode: str = "max",
    min_clean: float | None = None,
    run_id: str | None = None,
):
    """The run to promote: ``run_id`` (a trial of the search), or the best finished trial by
    ``metric`` among those with ``clean_leaf >= min_clean``."""
    trials = []
    if search_run is not None:
        info = search_run.info
        trials = tracking.child_runs(client, info.experiment_id, info.run_id)
    if run_id is not None:
        if search_run is not None and run_id not in {r.info.run_id for r in trials}:
            raise must("--run", f"a trial of search {search_run.info.run_name}", run_id)
        run = client.get_run(run_id)
        reason = refusal(run)
        if reason:
            raise must("--run", f"a finished trial with a checkpoint ({reason})", run_id)
        if not _checkpointed(client, run_id):
            raise must("--run", "a finished trial with a checkpoint (it has none)", run_id)
        return run
    if metric is None:
        raise must("--metric", "given (or --run)", None)
    if metric.startswith(("test/", "test.")):
        raise must(
            "--metric",
            "a validation metric (test numbers are reported, never selected on)",
            metric,
        )
    candidates = []
    for run in trials:
        value = run.data.metrics.get(metric)
        clean = run.data.metrics.get("clean_leaf")
        if refusal(run) or value is None or math.isnan(value):
            continue
        if min_clean is not None and (clean is None or clean < min_clean):
            continue
        candidates.append((value if mode == "max" else -value, run))
    candidates.sort(key=lambda item: item[0], reverse=True)
    for _, run in candidates:
        if _checkpointed(client, run.info.run_id):
            return run
    constraint = f" with clean_leaf >= {min_clean}" if min_clean is not None else ""
    raise must(
        "--metric",
        f"a metric of at least one finished trial with a checkpoint{constraint}",
        metric,
    )


def code_version() -> str:
    """The package version, and the git commit when the code runs from a checkout."""
    from raysearch import __version__

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{__version__}+{commit}" if commit else __version__


def inference_requirements(distributions: Iterable[str] = INFERENCE_DISTRIBUTIONS) -> list[str]:
    """``name==version`` for each distribution, at the version installed here.

    The model's own code travels with it (``code_paths``), so its requirements are only what that
    code imports from an index, pinned: a fresh environment then builds the classifier with the
    torch and open_clip that trained and tested it, whatever the index holds by then.
    """
    return [f"{name}=={importlib.metadata.version(name)}" for name in distributions]


def copy_inference_code(folder: Path) -> list[Path]:
    """Copies of the ``raysearch`` and ``trainables`` packages in ``folder``, for ``code_paths``:
    without bytecode or tests, and without the class trees ``trainables`` ships (a model reads its
    forest from its own ``trees.json``)."""
    import trainables
    from trainables.hierarchy.shipped import TREES_DIR

    def not_needed(directory: str, names: list[str]) -> set[str]:
        return {
            name
            for name in names
            if name in ("__pycache__", "tests")
            or name.endswith(".pyc")
            or Path(directory, name) == TREES_DIR
        }

    copies = []
    for package in (Path(__file__).parent, Path(trainables.__file__).parent):
        copies.append(Path(shutil.copytree(package, folder / package.name, ignore=not_needed)))
    return copies


def _existing_version(client, name: str, run_id: str):
    """The version of ``name`` registered from ``run_id`` (None when there is none). A failed
    search is an error, not "none": registering again would make a duplicate version."""
    query = f"name = {tracking.filter_value(check_model_name(name), field='--name')}"
    for version in client.search_model_versions(query):
        if (version.tags or {}).get(SOURCE_RUN_TAG) == run_id:
            return version
    return None


def promote(
    client,
    run,
    *,
    name: str,
    alias: str = "champion",
    search_run_id: str | None = None,
) -> Promotion:
    """Register ``run`` as a version of model ``name`` and point ``alias`` at it."""
    import mlflow

    from raysearch.model_package import package_from_run, read_meta

    check_model_name(name)
    check_alias(alias)
    run_id = run.info.run_id
    existing = _existing_version(client, name, run_id)
    if existing is not None:
        client.set_registered_model_alias(name, alias, existing.version)
        return Promotion(
            name, str(existing.version), alias, run_id, search_run_id, False, existing.source
        )
    lineage = {
        SOURCE_RUN_TAG: run_id,
        "raysearch.search_run": search_run_id or "",
        "raysearch.job": run.data.tags.get(tracking.JOB_TAG, ""),
        "raysearch.code_version": code_version(),
    }
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(client.tracking_uri)
    try:
        with tempfile.TemporaryDirectory() as scratch:
            package = package_from_run(client, run_id, Path(scratch) / "package", lineage)
            lineage = read_meta(package)["lineage"]  # with the config hash
            code = copy_inference_code(Path(scratch) / "code")
            with mlflow.start_run(run_id=run_id):
                logged = mlflow.pyfunc.log_model(
                    name=MODEL_ARTIFACT,
                    python_model=str(ENTRY_FILE),
                    artifacts={"package": str(package)},
                    code_paths=[str(folder) for folder in code],
                    pip_requirements=inference_requirements(),
                )
            # The run was FINISHED before: start_run reopened it; keep it as it was.
            client.set_terminated(run_id, status="FINISHED", end_time=run.info.end_time)
        version = mlflow.register_model(logged.model_uri, name, tags=lineage)
    finally:
        mlflow.set_tracking_uri(previous)
    client.set_registered_model_alias(name, alias, version.version)
    return Promotion(
        name, str(version.version), alias, run_id, search_run_id, True, logged.model_uri
    )
