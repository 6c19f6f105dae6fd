"""The searches and trials of an MLflow store or tracking server, read for `raysearch inspect`.

Compute first, then show: the readers return plain records (:class:`SearchInfo`,
:class:`TrialInfo`) built from what :mod:`raysearch.search` logs; sorting, filtering and the
table / JSON / CSV renderings are pure functions over those records.

What is read (see :mod:`raysearch.tracking`):

- a **search** is a run with the tag ``raysearch.search`` (its parent run; a plain training job,
  kind ``train``, is not one). Its metrics ``best_<metric>`` and tags ``raysearch.best_trial``
  and ``raysearch.best_run_id`` name the best trial once the search has ended;
- its **trials** are the runs whose ``mlflow.parentRunId`` is the search's run: the Optuna trial
  number (tag ``raysearch.optuna_trial``), the outcome (tag ``raysearch.status``; a run without
  it shows its MLflow status in lower case, e.g. ``running``), what Optuna sampled (params
  ``sampled.<name>``), the latest value of every metric.

Anything missing (a store written by an earlier version, a run still starting) reads as None and
shows as a blank; nothing here writes to the store.
"""

from __future__ import annotations

import csv
import datetime
import json
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raysearch import stores, tracking
from trainables.errors import must
from trainables.numbers import is_finite_number

#: The final metrics shown for every trial.
TRIAL_METRICS = ("clean_leaf", "robust_leaf", "worst_superclass", "transfer")
#: Trial outcomes recorded by the search (the ``raysearch.status`` tag).
OUTCOMES = ("finished", "pruned", "failed")
SAMPLED_PREFIX = "sampled."
PARAM_PREFIX = "param."
BEST_PREFIX = "best_"
OPTUNA_TRIAL_TAG = "raysearch.optuna_trial"
BEST_TRIAL_TAG = "raysearch.best_trial"
BEST_RUN_TAG = "raysearch.best_run_id"
_JOB_NUMBER = re.compile(r"-trial-(\d+)$")

# -- the records ---------------------------------------------------------------------------------


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
        return _finite_or_none(self.metrics.get(name))


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
            return _finite_or_none(self.metrics[name])
        # `--sort robust_leaf` on searches means the best trial's robust_leaf.
        return _finite_or_none(self.best.get(name.removeprefix(BEST_PREFIX)))


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


# -- reading MLflow ------------------------------------------------------------------------------


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


def _finite_or_none(value: Any) -> float | None:
    return float(value) if is_finite_number(value) else None


def search_info(run, children: Sequence = (), *, now: float | None = None) -> SearchInfo:
    """A search's record from its parent run and its trials' runs."""
    now = time.time() if now is None else now
    metrics = dict(run.data.metrics)
    trials = dict(Counter(trial_status(child) for child in children))
    if not children:  # the counts the search logged when it ended, if any
        for key, value in metrics.items():
            count = _finite_or_none(value)
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
            if key.startswith(BEST_PREFIX) and _finite_or_none(value) is not None
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
    epochs = _finite_or_none(metrics.get("epochs_completed"))
    if epochs is None and _finite_or_none(metrics.get("epoch")) is not None:
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


# -- sorting and filtering ------------------------------------------------------------------------


def parse_sort(text: str) -> tuple[str, bool]:
    """``METRIC`` or ``METRIC:desc`` (descending), ``METRIC:asc`` -> (field, descending)."""
    name, _, order = text.partition(":")
    name, order = name.strip(), order.strip().lower() or "desc"
    if not _FIELD.fullmatch(name) or order not in ("asc", "desc"):
        raise must("--sort", "METRIC, METRIC:asc or METRIC:desc (e.g. robust_leaf:asc)", text)
    return name, order == "desc"


def _sort_key(value: Any) -> tuple:
    number = _number(value)
    return (0, number, "") if number is not None else (1, 0.0, str(value))


def sort_rows(rows: Sequence, name: str, *, descending: bool = True) -> list:
    """``rows`` by the field ``name``; rows without it come last either way (stable)."""
    present = [row for row in rows if row.value(name) is not None]
    missing = [row for row in rows if row.value(name) is None]
    present.sort(key=lambda row: _sort_key(row.value(name)), reverse=descending)
    return present + missing


@dataclass(frozen=True)
class Condition:
    """One comparison of a filter: ``field op value``."""

    field: str
    op: str
    text: str
    quoted: bool = False

    @property
    def number(self) -> float | None:
        return None if self.quoted else _number(self.text)

    def matches(self, row) -> bool:
        """Missing (or NaN) values match nothing, ``!=`` included."""
        value = row.value(self.field)
        if value is None:
            return False
        left, right = _number(value), self.number
        if left is None or right is None:
            left, right = _text(value), self.text  # strings compare as strings
        return _OPERATORS[self.op](left, right)


_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: a == b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-/]*")
_CLAUSE = re.compile(
    r"\s*(?P<field>[A-Za-z_][A-Za-z0-9_.\-/]*)\s*(?P<op><=|>=|!=|==|=|<|>)\s*(?P<value>.*?)\s*"
)
FILTER_HELP = (
    "comparisons such as robust_leaf>0.5, status=finished or param.optim.lr<1e-3 "
    "(= != < <= > >=), joined with ' and '"
)


def _number(value: Any) -> float | None:
    """A finite number from a number or a numeric string (MLflow keeps params as text)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    try:
        number = float(str(value).strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _split_and(expression: str) -> list[str]:
    """Split on the word ``and`` outside quotes."""
    parts, current, quote = [], [], None
    index = 0
    while index < len(expression):
        char = expression[index]
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif re.match(r"\s+and\s+", expression[index:], flags=re.IGNORECASE) and current:
            match = re.match(r"\s+and\s+", expression[index:], flags=re.IGNORECASE)
            parts.append("".join(current))
            current = []
            index += match.end()
            continue
        current.append(char)
        index += 1
    parts.append("".join(current))
    return parts


def parse_filter(expression: str) -> list[Condition]:
    """``robust_leaf>0.5 and status=finished`` -> its conditions (all must hold).

    A value in quotes is a string; otherwise it is compared as a number when both sides are
    numbers, as a string else. No ``eval``: anything else is refused with one line.
    """
    conditions = []
    for clause in _split_and(expression):
        found = _CLAUSE.fullmatch(clause)
        if found is None:
            raise must("--filter", FILTER_HELP, expression)
        value, quoted = found["value"], False
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value, quoted = value[1:-1], True
        elif not value or any(char.isspace() or char in "<>=!'\"" for char in value):
            raise must("--filter", FILTER_HELP, expression)
        conditions.append(Condition(found["field"], found["op"], value, quoted))
    return conditions


def filter_rows(rows: Iterable, conditions: Sequence[Condition]) -> list:
    return [row for row in rows if all(c.matches(row) for c in conditions)]


def known_fields(rows: Sequence, columns: Iterable[str]) -> list[str]:
    """The fields rows can be sorted and filtered by: columns, metrics, ``param.<name>``."""
    names = dict.fromkeys(columns)
    for row in rows:
        if isinstance(row, TrialInfo):
            names.update(dict.fromkeys(sorted(row.metrics)))
            names.update(dict.fromkeys(f"{PARAM_PREFIX}{key}" for key in sorted(row.params)))
        else:
            names.update(dict.fromkeys(f"{BEST_PREFIX}{key}" for key in sorted(row.best)))
            names.update(dict.fromkeys(sorted(row.metrics)))
    return list(names)


def check_field(rows: Sequence, name: str, option: str, got: str, columns: Iterable[str]) -> None:
    """Refuse a field no row has and no column is (a typo would sort or filter nothing)."""
    columns = list(columns)
    if not rows or name in columns or any(row.value(name) is not None for row in rows):
        return
    fields = known_fields(rows, columns)
    shown = ", ".join(fields[:14]) + (", ..." if len(fields) > 14 else "")
    raise must(option, f"about a field these rows have ({name!r} is none: {shown})", got)


def select(
    rows: Sequence,
    *,
    sort: str | None = None,
    where: str | None = None,
    columns: Iterable[str] = (),
) -> list:
    """``rows`` filtered by ``where`` (the ``--filter`` language), then sorted by ``sort``."""
    columns = list(columns)
    if where:
        conditions = parse_filter(where)
        for condition in conditions:
            check_field(rows, condition.field, "--filter", where, columns)
        rows = filter_rows(rows, conditions)
    if sort:
        name, descending = parse_sort(sort)
        check_field(rows, name, "--sort", sort, columns)
        rows = sort_rows(rows, name, descending=descending)
    return list(rows)


# -- rendering -----------------------------------------------------------------------------------


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


def _cell(value: Any, *, width: int = 32) -> str:
    if value is None:
        return ""
    number = _number(value) if isinstance(value, int | float) else None
    if isinstance(value, float) and number is not None:
        return f"{value:.4g}"
    text = str(value)
    if isinstance(value, str) and "." in text and (parsed := _number(text)) is not None:
        text = f"{parsed:.4g}"  # params are logged as text: 0.000312345 -> 0.0003123
    return text if len(text) <= width else text[: width - 3] + "..."


def format_table(
    header: Sequence[str], body: Sequence[Sequence[Any]], *, right: Iterable[str] = ("duration",)
) -> str:
    """A fixed-width table: numbers (and the ``right`` columns) right-aligned, text
    left-aligned, blanks for None."""
    right = set(right)
    cells = [[_cell(value) for value in line] for line in body]
    widths = [max([len(name), *(len(line[i]) for line in cells)]) for i, name in enumerate(header)]
    numeric = [
        name in right
        or all(value is None or _number(value) is not None for value in (row[i] for row in body))
        for i, name in enumerate(header)
    ]

    def render(line: Sequence[str]) -> str:
        text = "  ".join(
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, right in zip(line, widths, numeric, strict=True)
        )
        return text.rstrip()

    return "\n".join(render(line) for line in [list(header), *cells])


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
