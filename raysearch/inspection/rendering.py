"""Showing records: terminal tables, JSON documents and CSV files; pure functions."""

from __future__ import annotations

import csv
import datetime
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from raysearch.inspection.filtering import as_number
from raysearch.inspection.records import (
    BEST_PREFIX,
    OUTCOMES,
    PARAM_PREFIX,
    TRIAL_COLUMNS,
    TRIAL_METRICS,
    SearchInfo,
    TrialInfo,
)
from raysearch.tables import format_cell, render_table


def format_time(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return datetime.datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M")


def iso_time(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.timezone.utc)
    return moment.isoformat(timespec="seconds")


def format_duration(seconds: float | None) -> str:
    """``42s``, ``3m05s``, ``1h02m``; blank when unknown."""
    if seconds is None:
        return ""
    total = int(round(seconds))
    if total < 60:
        return f"{total}s"
    if total < 3600:
        return f"{total // 60}m{total % 60:02d}s"
    return f"{total // 3600}h{total % 3600 // 60:02d}m"


def format_table(
    header: Sequence[str], body: Sequence[Sequence[Any]], *, right: Iterable[str] = ("duration",)
) -> str:
    """A fixed-width table: numbers (and the ``right`` columns) right-aligned, text
    left-aligned, blanks for None."""
    right = set(right)
    numeric = [
        name in right
        or all(value is None or as_number(value) is not None for value in (row[i] for row in body))
        for i, name in enumerate(header)
    ]
    cells = [[format_cell(value, width=32) for value in line] for line in body]
    return render_table(header, cells, right=numeric)


def trial_param_names(trials: Sequence[TrialInfo]) -> list[str]:
    return sorted({name for trial in trials for name in trial.params})


def _extra_metric(sort: str | None, shown: Sequence[str]) -> list[str]:
    """The sort field as a column too, when it is a metric the table does not show."""
    if not sort:
        return []
    name = sort.partition(":")[0].strip()
    return [] if name in shown or name.startswith(PARAM_PREFIX) else [name]


def trials_table(trials: Sequence[TrialInfo], *, sort: str | None = None) -> str:
    params = trial_param_names(trials)
    metrics = list(TRIAL_METRICS)
    metrics += _extra_metric(sort, [*metrics, *TRIAL_COLUMNS, *(p for p in params)])
    header = ["trial", "status", *params, *metrics, "epochs", "duration", "run_id"]
    body = [
        [
            trial.number,
            trial.status,
            *(trial.params.get(name) for name in params),
            *(trial.value(name) for name in metrics),
            trial.epochs,
            format_duration(trial.duration_s) or None,
            trial.run_id,
        ]
        for trial in trials
    ]
    return format_table(header, body)


def best_metric_names(searches: Sequence[SearchInfo]) -> list[str]:
    return list(dict.fromkeys(name for search in searches for name in search.best))


def searches_table(searches: Sequence[SearchInfo]) -> str:
    best = best_metric_names(searches)
    header = [
        "search",
        "status",
        "started",
        "duration",
        "trials",
        *OUTCOMES,
        "other",
        *(f"{BEST_PREFIX}{name}" for name in best),
        "best_trial",
        "run_id",
    ]
    body = [
        [
            search.name,
            search.status,
            format_time(search.start_time) or None,
            format_duration(search.duration_s) or None,
            search.trial_count,
            *(search.trials.get(status, 0) for status in OUTCOMES),
            search.other_trials,
            *(search.best.get(name) for name in best),
            search.best_trial,
            search.run_id,
        ]
        for search in searches
    ]
    return format_table(header, body)


def _clean(value: Any) -> Any:
    """JSON-safe: NaN and infinities become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def search_dict(search: SearchInfo) -> dict[str, Any]:
    return {
        "search": search.name,
        "run_id": search.run_id,
        "experiment_id": search.experiment_id,
        "status": search.status,
        "start_time": iso_time(search.start_time),
        "duration_s": search.duration_s,
        "trials": dict(search.trials),
        "trial_count": search.trial_count,
        "best": {key: _clean(value) for key, value in search.best.items()},
        "best_trial": search.best_trial,
        "best_run_id": search.best_run_id,
    }


def trial_dict(trial: TrialInfo) -> dict[str, Any]:
    return {
        "trial": trial.number,
        "status": trial.status,
        "params": dict(trial.params),
        "metrics": {key: _clean(value) for key, value in sorted(trial.metrics.items())},
        "epochs": trial.epochs,
        "duration_s": trial.duration_s,
        "run_id": trial.run_id,
        "error": trial.error,
    }


def search_records(searches: Sequence[SearchInfo]) -> list[dict[str, Any]]:
    """One flat record per search (the CSV rows)."""
    best = best_metric_names(searches)
    return [
        {
            "search": s.name,
            "status": s.status,
            "start_time": iso_time(s.start_time),
            "duration_s": s.duration_s,
            "trials": s.trial_count,
            **{status: s.trials.get(status, 0) for status in OUTCOMES},
            "other": s.other_trials,
            **{f"{BEST_PREFIX}{name}": _clean(s.best.get(name)) for name in best},
            "best_trial": s.best_trial,
            "run_id": s.run_id,
        }
        for s in searches
    ]


def trial_records(trials: Sequence[TrialInfo]) -> list[dict[str, Any]]:
    """One flat record per trial (the CSV rows): the sampled params, then every metric."""
    params = trial_param_names(trials)
    others = sorted({key for t in trials for key in t.metrics} - set(TRIAL_METRICS))
    return [
        {
            "trial": t.number,
            "status": t.status,
            **{f"{PARAM_PREFIX}{name}": t.params.get(name) for name in params},
            **{name: _clean(t.metrics.get(name)) for name in [*TRIAL_METRICS, *others]},
            "epochs": t.epochs,
            "duration_s": t.duration_s,
            "run_id": t.run_id,
            "error": t.error,
        }
        for t in trials
    ]


def write_csv(records: Sequence[dict[str, Any]], path: Path, *, header: Sequence[str] = ()):
    """``records`` as CSV (blank cells for None); the header alone when there are none."""
    columns = list(records[0]) if records else list(header)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for record in records:
            writer.writerow({key: "" if value is None else value for key, value in record.items()})
    return path


def to_json(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, default=str, allow_nan=False)
