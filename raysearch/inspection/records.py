"""The records `raysearch inspect` shows: one per search, one per trial, and their columns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trainables.numbers import is_finite_number

#: The final metrics shown for every trial.
TRIAL_METRICS = ("clean_leaf", "robust_leaf", "worst_superclass", "transfer")
#: Trial outcomes recorded by the search (the ``raysearch.status`` tag).
OUTCOMES = ("finished", "pruned", "failed")
SAMPLED_PREFIX = "sampled."
PARAM_PREFIX = "param."
BEST_PREFIX = "best_"


def finite_or_none(value: Any) -> float | None:
    return float(value) if is_finite_number(value) else None


@dataclass
class TrialInfo:
    """One trial of a search, as MLflow recorded it.

    Attributes:
        number: the Optuna trial number (None when the run does not say).
        status: ``finished`` / ``pruned`` / ``failed``, or the run's MLflow status in lower case.
        params: what Optuna sampled, by parameter name (the ``sampled.`` prefix removed).
        metrics: the latest value of every metric of the run.
        epochs: epochs completed (None when no epoch was logged).
        duration_s: wall time of the run (until now while it runs); None without a start time.
        run_id: the trial's MLflow run.
        error: why it failed (the ``raysearch.error`` tag).
        all_params: every param of the run (the flattened experiment config and the sampled ones).
    """

    number: int | None
    status: str
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    epochs: int | None = None
    duration_s: float | None = None
    run_id: str = ""
    error: str | None = None
    all_params: dict[str, str] = field(default_factory=dict)

    def value(self, name: str) -> Any:
        """The field ``name`` (a column, ``param.<name>`` or a metric); None when missing."""
        if name.startswith(PARAM_PREFIX):
            key = name.removeprefix(PARAM_PREFIX)
            return self.params.get(key, self.all_params.get(key))
        columns = {
            "trial": self.number,
            "status": self.status,
            "epochs": self.epochs,
            "duration": self.duration_s,
            "duration_s": self.duration_s,
            "run_id": self.run_id,
            "error": self.error,
        }
        if name in columns:
            return columns[name]
        return finite_or_none(self.metrics.get(name))


@dataclass
class SearchInfo:
    """One search: its parent run and what it recorded about its trials.

    Attributes:
        name: the search's name (the ``raysearch.search`` tag).
        run_id: the parent run.
        experiment_id: the MLflow experiment it is in.
        status: the parent run's MLflow status in lower case (``killed``: interrupted).
        start_time: when it started (seconds since the epoch), None when unknown.
        duration_s: its wall time (until now while it runs).
        trials: trials by status (``finished``, ``pruned``, ``failed``, ``running``, ...).
        best: the best trial's values, by metric (``best_<metric>`` without the prefix).
        best_trial: the best trial's number (the first of a Pareto front).
        best_run_id: the best trial's run.
        metrics: every metric of the parent run.
    """

    name: str
    run_id: str
    experiment_id: str
    status: str
    start_time: float | None = None
    duration_s: float | None = None
    trials: dict[str, int] = field(default_factory=dict)
    best: dict[str, float] = field(default_factory=dict)
    best_trial: int | None = None
    best_run_id: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def trial_count(self) -> int:
        return sum(self.trials.values())

    @property
    def other_trials(self) -> int:
        """Trials not (yet) finished, pruned or failed: running, killed, unfinished."""
        return self.trial_count - sum(self.trials.get(status, 0) for status in OUTCOMES)

    def value(self, name: str) -> Any:
        """The field ``name``: a column, ``best_<metric>``, a parent metric, or a best value."""
        columns = {
            "search": self.name,
            "name": self.name,
            "status": self.status,
            "start": self.start_time,
            "start_time": self.start_time,
            "duration": self.duration_s,
            "duration_s": self.duration_s,
            "trials": self.trial_count,
            "other": self.other_trials,
            "best_trial": self.best_trial,
            "best_run_id": self.best_run_id,
            "run_id": self.run_id,
        }
        if name in columns:
            return columns[name]
        if name in OUTCOMES:
            return self.trials.get(name, 0)
        if name in self.metrics:
            return finite_or_none(self.metrics[name])
        # `--sort robust_leaf` on searches means the best trial's robust_leaf.
        return finite_or_none(self.best.get(name.removeprefix(BEST_PREFIX)))


SEARCH_COLUMNS = (
    "search",
    "status",
    "start",
    "duration",
    "duration_s",
    "trials",
    *OUTCOMES,
    "other",
)
TRIAL_COLUMNS = (
    "trial",
    "status",
    "epochs",
    "duration",
    "duration_s",
    "run_id",
    "error",
    *TRIAL_METRICS,
)
