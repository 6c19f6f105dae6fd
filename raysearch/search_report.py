"""What a search leaves behind: the table of its trials, the best trial or Pareto front, plots.

Pure functions over :class:`TrialRow` (the search builds the rows from Ray Tune's trials and the
MLflow runs), plus writers of the CSV / Parquet table and the PNG plots (drawn by Optuna's
matplotlib backend from the search's study).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raysearch.tables import format_cell, render_table
from trainables.numbers import is_number

#: Trial outcomes: ran every epoch / stopped early by the scheduler / raised / not ended yet.
STATUSES = ("finished", "pruned", "failed", "unfinished")
#: Metrics shown for every trial besides the objectives.
SHOWN_METRICS = ("clean_leaf", "robust_leaf", "transfer", "worst_superclass")


@dataclass
class TrialRow:
    """One trial of a search.

    Attributes:
        number: the Optuna trial number (the order trials were sampled in).
        trial_id: Ray Tune's trial id.
        status: one of :data:`STATUSES`.
        params: what Optuna sampled, by parameter name (``trees``, ``depth.form``, ``optim.lr``).
        metrics: the last metrics the trial reported (its final ones when finished).
        epochs: epochs the trial completed.
        seconds: the trial's wall time.
        run_id: its MLflow run (None when it has none yet).
        error: the failure's reason (failed trials).
    """

    number: int
    trial_id: str
    status: str
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    epochs: int = 0
    seconds: float = 0.0
    run_id: str | None = None
    error: str | None = None


def _value(row: TrialRow, metric: str) -> float:
    value = row.metrics.get(metric)
    return float(value) if isinstance(value, int | float) else math.nan


def _better_or_equal(a: float, b: float, mode: str) -> bool:
    return a >= b if mode == "max" else a <= b


def dominates(a: Sequence[float], b: Sequence[float], modes: Sequence[str]) -> bool:
    """``a`` is at least as good as ``b`` on every objective and better on one."""
    at_least = all(_better_or_equal(x, y, mode) for x, y, mode in zip(a, b, modes, strict=True))
    return at_least and any(x != y for x, y in zip(a, b, strict=True))


def best_trials(rows: Sequence[TrialRow], metrics: Sequence[str], modes: Sequence[str]):
    """The best finished trial (one objective) or the Pareto front (two), best first.

    Only finished trials count: a pruned trial's metrics come from fewer epochs. Trials with a
    missing or NaN objective are left out.
    """
    candidates = []
    for row in rows:
        values = [_value(row, metric) for metric in metrics]
        if row.status == "finished" and not any(math.isnan(v) for v in values):
            candidates.append((values, row))
    if not candidates:
        return []
    front = [
        (values, row)
        for values, row in candidates
        if not any(dominates(other, values, modes) for other, _ in candidates)
    ]
    sign = 1.0 if modes[0] == "max" else -1.0
    front.sort(key=lambda item: (-sign * item[0][0], item[1].number))
    if len(metrics) == 1:
        front = front[:1]
    return [row for _, row in front]


def summary_records(
    rows: Sequence[TrialRow], param_names: Sequence[str], objectives: Sequence[str] = ()
) -> list[dict]:
    """One flat record per trial: identity, status, every sampled parameter, the metrics.

    Per-level metrics (``clean/<tree>/<level>``) are left out unless they are objectives.
    """
    metric_names = sorted(
        {
            key
            for row in rows
            for key, value in row.metrics.items()
            if is_number(value) and ("/" not in key or key in objectives)
        }
        - {"epoch", "epochs_completed", "epochs_total", "start_epoch", "step", "trial_finished"}
    )
    records = []
    for row in sorted(rows, key=lambda r: r.number):
        record: dict[str, Any] = {
            "trial": row.number,
            "status": row.status,
            "epochs": row.epochs,
            "seconds": round(row.seconds, 1),
        }
        for name in param_names:
            value = row.params.get(name)
            # One type per column (Parquet): lists and mixed choices are written as text.
            record[f"param.{name}"] = None if value is None else str(value)
        for name in metric_names:
            record[name] = row.metrics.get(name)
        record["mlflow_run_id"] = row.run_id
        record["trial_id"] = row.trial_id
        record["error"] = row.error
        records.append(record)
    return records


def write_summary(records: Sequence[dict], folder: Path) -> dict[str, Path]:
    """``summary.csv`` and ``summary.parquet`` in ``folder``; returns their paths."""
    import pandas as pd

    folder.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame.from_records(list(records))
    paths = {"csv": folder / "summary.csv", "parquet": folder / "summary.parquet"}
    frame.to_csv(paths["csv"], index=False)
    frame.to_parquet(paths["parquet"], index=False)
    return paths


def write_plots(study, metrics: Sequence[str], folder: Path) -> tuple[dict[str, Path], list[str]]:
    """PNG plots of the study: objective vs trial, Pareto front (two objectives), parameter
    importances. Returns the written paths and a note for each plot that could not be drawn
    (too few finished trials, say)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_plots

    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    notes: list[str] = []
    single = len(metrics) == 1

    def draw(name: str, plot, *args, **kwargs) -> None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
                axes = plot(*args, **kwargs)
        except (ValueError, RuntimeError, ZeroDivisionError) as error:
            notes.append(f"{name}: not drawn ({' '.join(str(error).split())[:200]})")
            return
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        figure.set_size_inches(8, 5)
        figure.tight_layout()
        path = folder / f"{name}.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        written[name] = path

    for index, metric in enumerate(metrics):
        target = None if single else (lambda trial, i=index: trial.values[i])
        name = "history" if single else f"history-{metric}"
        draw(name, optuna_plots.plot_optimization_history, study, target=target, target_name=metric)
    if not single:
        draw("pareto", optuna_plots.plot_pareto_front, study, target_names=list(metrics))
    finished = [trial for trial in study.trials if trial.state.name == "COMPLETE"]
    if len(finished) < 2:
        notes.append("importances: not drawn (needs 2 finished trials)")
    else:
        target = None if single else (lambda trial: trial.values[0])
        draw(
            "importances",
            optuna_plots.plot_param_importances,
            study,
            target=target,
            target_name=metrics[0],
        )
    return written, notes


def format_table(rows: Sequence[TrialRow], param_names: Sequence[str], metrics: Sequence[str]):
    """A fixed-width table of every trial: number, status, epochs, params, metrics."""
    shown = list(dict.fromkeys([*metrics, *SHOWN_METRICS]))
    shown = [m for m in shown if any(m in row.metrics for row in rows)]
    header = ["trial", "status", "epochs", *param_names, *shown]
    body = [
        [
            str(row.number),
            row.status,
            str(row.epochs),
            *(format_cell(row.params.get(name), missing="-") for name in param_names),
            *(format_cell(row.metrics.get(metric), missing="-") for metric in shown),
        ]
        for row in sorted(rows, key=lambda r: r.number)
    ]
    return render_table(header, body)


def describe_params(params: dict[str, Any]) -> str:
    """``trees=form+corners depth.form=2 optim.lr=0.00031`` for one line of progress."""
    return " ".join(f"{name}={format_cell(value, missing='-')}" for name, value in params.items())


@dataclass
class SearchResult:
    """A search that has run (to the end, or interrupted)."""

    name: str
    parent_run_id: str
    tracking_uri: str
    experiment: str
    study_name: str
    optuna_url: str
    rows: list[TrialRow]
    best: list[TrialRow]
    artifacts: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    interrupted: bool = False
    table: str = ""
    stop_reason: str | None = None  # why it was interrupted, when not by Ctrl-C (SIGTERM)


def space_param_names(space, rows: list[TrialRow]) -> list[str]:
    """The sampled parameters in the order of the space file (``depth.<tree>`` by tree)."""
    ordered = []
    for param in space.params:
        if param.kind == "depth":
            ordered.extend(f"depth.{tree}" for tree in param.ranges)
        else:
            ordered.append(param.name)
    seen = {name for row in rows for name in row.params}
    return [name for name in ordered if name in seen] + sorted(seen - set(ordered))
