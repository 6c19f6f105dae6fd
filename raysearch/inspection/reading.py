"""Reading searches and trials from an MLflow store (through :mod:`raysearch.tracking`) into
:mod:`~raysearch.inspection.records`; a store's failure is one line."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from raysearch import stores, tracking
from raysearch.inspection.records import (
    BEST_PREFIX,
    SAMPLED_PREFIX,
    SearchInfo,
    TrialInfo,
    finite_or_none,
)
from trainables.errors import must

OPTUNA_TRIAL_TAG = "raysearch.optuna_trial"
BEST_TRIAL_TAG = "raysearch.best_trial"
BEST_RUN_TAG = "raysearch.best_run_id"
_JOB_NUMBER = re.compile(r"-trial-(\d+)$")


def _store_error(uri: str, error: Exception):
    failure = stores.store_failure(uri, error)
    if failure is not None:
        return failure
    first = " ".join(str(error).split())[:300]
    return must("--tracking-uri", "a readable MLflow store", f"<{uri} ({first})>")


def get_experiment(client, name: str):
    """The experiment ``name``; one line listing the experiments there when it does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment
        names = sorted(e.name for e in client.search_experiments())
    except MlflowException as error:
        raise _store_error(client.tracking_uri, error) from None
    listed = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "") if names else "none"
    raise must("--experiment", f"an MLflow experiment in {client.tracking_uri} ({listed})", name)


def _wrapped(read: Callable, client, *args) -> list:
    """``read(client, *args)`` (a :mod:`raysearch.tracking` query), a store's failure as one
    line."""
    from mlflow.exceptions import MlflowException

    try:
        return read(client, *args)
    except MlflowException as error:
        raise _store_error(client.tracking_uri, error) from None


def trial_status(run) -> str:
    """The outcome the search recorded, else the run's MLflow status (``running``, ``killed``)."""
    recorded = run.data.tags.get(tracking.STATUS_TAG)
    return recorded if recorded else str(run.info.status or "unknown").lower()


def _duration(run, now: float) -> float | None:
    start, end = run.info.start_time, run.info.end_time
    if not start:
        return None
    if run.info.status == "RUNNING":  # a reopened (resumed) run keeps its old end time
        end = now * 1000
    elif not end:
        return None
    return max(0.0, (end - start) / 1000)


def _int_or_none(text: Any) -> int | None:
    try:
        return int(str(text))
    except (TypeError, ValueError):
        return None


def search_info(run, children: Sequence = (), *, now: float | None = None) -> SearchInfo:
    """A search's record from its parent run and its trials' runs."""
    now = time.time() if now is None else now
    metrics = dict(run.data.metrics)
    trials = dict(Counter(trial_status(child) for child in children))
    if not children:  # the counts the search logged when it ended, if any
        for key, value in metrics.items():
            count = finite_or_none(value)
            if key.startswith("trials_") and count:
                trials[key.removeprefix("trials_")] = int(count)
    tags = run.data.tags
    return SearchInfo(
        name=tags.get(tracking.SEARCH_TAG) or run.info.run_name or run.info.run_id,
        run_id=run.info.run_id,
        experiment_id=run.info.experiment_id,
        status=str(run.info.status or "unknown").lower(),
        start_time=run.info.start_time / 1000 if run.info.start_time else None,
        duration_s=_duration(run, now),
        trials=trials,
        best={
            key.removeprefix(BEST_PREFIX): value
            for key, value in metrics.items()
            if key.startswith(BEST_PREFIX) and finite_or_none(value) is not None
        },
        best_trial=_int_or_none(tags.get(BEST_TRIAL_TAG)),
        best_run_id=tags.get(BEST_RUN_TAG),
        metrics=metrics,
    )


def trial_info(run, *, now: float | None = None) -> TrialInfo:
    """A trial's record from its run."""
    now = time.time() if now is None else now
    tags, params, metrics = run.data.tags, dict(run.data.params), dict(run.data.metrics)
    number = _int_or_none(tags.get(OPTUNA_TRIAL_TAG))
    if number is None:  # an older run: the job name ends with -trial-NNN
        found = _JOB_NUMBER.search(tags.get(tracking.JOB_TAG, ""))
        number = int(found.group(1)) if found else None
    epochs = finite_or_none(metrics.get("epochs_completed"))
    if epochs is None and finite_or_none(metrics.get("epoch")) is not None:
        epochs = metrics["epoch"] + 1  # "epoch" is the index of the last logged epoch
    return TrialInfo(
        number=number,
        status=trial_status(run),
        params={
            key.removeprefix(SAMPLED_PREFIX): value
            for key, value in params.items()
            if key.startswith(SAMPLED_PREFIX)
        },
        metrics=metrics,
        epochs=None if epochs is None else int(epochs),
        duration_s=_duration(run, now),
        run_id=run.info.run_id,
        error=tags.get(tracking.ERROR_TAG),
        all_params=params,
    )


def list_searches(client, experiment_name: str, *, now: float | None = None) -> list[SearchInfo]:
    """Every search of the experiment, newest first."""
    experiment = get_experiment(client, experiment_name)
    runs = _wrapped(tracking.all_runs, client, [experiment.experiment_id])
    children: dict[str, list] = {}
    for run in runs:
        parent = run.data.tags.get(tracking.PARENT_TAG)
        if parent:
            children.setdefault(parent, []).append(run)
    searches = [
        search_info(run, children.get(run.info.run_id, ()), now=now)
        for run in runs
        if tracking.is_search_run(run)
    ]
    return sorted(searches, key=lambda s: -(s.start_time or 0.0))


def find_search(client, experiment_name: str, ref: str) -> SearchInfo:
    """The search named ``ref``, or whose parent run id is ``ref`` (in any experiment)."""
    from mlflow.exceptions import MlflowException

    try:
        run = tracking.find_search_run(client, None, ref)  # a run id: in any experiment
        if run is None:
            experiment = get_experiment(client, experiment_name)
            run = tracking.find_search_run(client, experiment.experiment_id, ref)
    except MlflowException as error:
        raise _store_error(client.tracking_uri, error) from None
    if run is not None and not tracking.is_search_run(run):
        raise must("--search", "the run id of a search's parent run (not a trial's)", ref)
    if run is None:
        names = [s.name for s in list_searches(client, experiment_name)]
        listed = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "") if names else "none"
        raise must(
            "--search",
            f"a search name or parent run id in experiment {experiment_name!r} ({listed})",
            ref,
        )
    return search_info(run, _children(client, run), now=None)


def _children(client, run) -> list:
    return _wrapped(tracking.child_runs, client, run.info.experiment_id, run.info.run_id)


def list_trials(client, search: SearchInfo, *, now: float | None = None) -> list[TrialInfo]:
    """The trials of ``search``, by trial number (runs without one last)."""
    runs = _wrapped(tracking.child_runs, client, search.experiment_id, search.run_id)
    trials = [trial_info(run, now=now) for run in runs]
    return sorted(trials, key=lambda t: (t.number is None, t.number or 0, t.run_id))
