"""The MLflow side of a search: its inputs logged on the parent run, the trials' rows read back
from Tune and their runs, nothing left RUNNING, and the parent run closed with the summary."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from raysearch import tracking
from raysearch.config import config_to_dict
from raysearch.search_callbacks import error_text, recorded_status, sampled_params
from raysearch.search_report import SearchResult, TrialRow
from raysearch.search_state import NUMBER_KEY, trial_job_name
from raysearch.spaces import SearchSpace
from trainables.numbers import is_finite_number


def log_search_inputs(client, run_id: str, space: SearchSpace, space_file: Path | None, info):
    import json
    import tempfile

    import yaml

    params = {
        "search.space": space.name,
        "search.trials": space.budget.trials,
        "search.concurrency": info["concurrency"],
        "search.scheduler": space.budget.scheduler,
        "search.grace_epochs": space.budget.grace_epochs,
        "search.reduction_factor": space.budget.reduction_factor,
        "search.seed": space.budget.seed,
        "search.sampler": info["sampler"],
        "search.objectives": ", ".join(f"{o.metric} ({o.mode})" for o in space.objectives),
        "search.study": info["study"],
        "search.optuna_storage": info["optuna_url"],
    }
    tracking.log_params(client, run_id, params)
    with tempfile.TemporaryDirectory() as folder:
        if space_file is not None:
            shutil.copy(space_file, Path(folder) / space_file.name)
        Path(folder, "base-config.yaml").write_text(
            yaml.safe_dump(config_to_dict(space.base), sort_keys=False)
        )
        Path(folder, "search.json").write_text(json.dumps(params, indent=2, default=str))
        client.log_artifacts(run_id, folder, "space")


def open_search_run(
    client, experiment: str, search: str, space: SearchSpace, space_file: Path | None, info: dict
) -> str:
    """The id of the search's parent run, created (with its inputs logged) on the first launch."""
    parent, created = tracking.get_or_create_search_run(client, experiment, search)
    if created:
        log_search_inputs(client, parent.info.run_id, space, space_file, info)
    return parent.info.run_id


def trial_rows(trials, client, experiment: str, search: str) -> list[TrialRow]:
    rows = []
    for trial in trials:
        if NUMBER_KEY not in trial.config:
            continue
        number = int(trial.config[NUMBER_KEY])
        result = dict(trial.last_result or {})
        run = tracking.find_job_run(client, experiment, trial_job_name(search, number))
        status = recorded_status(trial, run)
        rows.append(
            TrialRow(
                number=number,
                trial_id=trial.trial_id,
                status=status,
                params=sampled_params(trial),
                metrics=result,
                epochs=int(result.get("epochs_completed", 0) or 0),
                seconds=float(result.get("time_total_s", 0.0) or 0.0),
                run_id=run.info.run_id if run is not None else None,
                error=error_text(trial) if status == "failed" else None,
            )
        )
    return rows


def close_orphans(
    study,
    client,
    experiment: str,
    parent_run_id: str,
    interrupted: bool,
    *,
    stop_reason: str | None = None,
) -> None:
    """Leave nothing RUNNING: Optuna trials no Tune trial will finish (a driver killed between
    asking and saving) end FAIL; an interrupted search's open child runs end KILLED, with
    ``stop_reason`` (e.g. SIGTERM) as their ``raysearch.error`` when given."""
    from optuna.trial import TrialState

    if not interrupted:
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            study.tell(trial.number, state=TrialState.FAIL)
    for run in tracking.child_runs(client, experiment, parent_run_id, running_only=True):
        reason = stop_reason or "search interrupted; continue with raysearch launch --resume"
        if not interrupted:
            reason = "the search ended before this trial"
        client.set_tag(run.info.run_id, tracking.ERROR_TAG, reason)
        client.set_terminated(run.info.run_id, status="KILLED")


def finish_parent(client, parent_id: str, result: SearchResult, space: SearchSpace, paths):
    from mlflow.entities import Metric

    counts = {
        status: sum(row.status == status for row in result.rows)
        for status in ("finished", "pruned", "failed", "unfinished")
    }
    stamp = int(time.time() * 1000)
    metrics = [Metric(f"trials_{status}", float(n), stamp, 0) for status, n in counts.items()]
    if result.best:
        best = result.best[0]
        for metric in space.metrics:
            if is_finite_number(best.metrics.get(metric)):
                metrics.append(Metric(f"best_{metric}", float(best.metrics[metric]), stamp, 0))
        client.set_tag(parent_id, "raysearch.best_trial", str(best.number))
        if best.run_id:
            client.set_tag(parent_id, "raysearch.best_run_id", best.run_id)
        if len(result.best) > 1:
            client.set_tag(
                parent_id, "raysearch.pareto_trials", ",".join(str(r.number) for r in result.best)
            )
    client.log_batch(parent_id, metrics=metrics)
    client.log_artifacts(parent_id, str(paths.report), "summary")
    if result.interrupted:
        client.set_tag(
            parent_id,
            tracking.ERROR_TAG,
            result.stop_reason
            or f"interrupted; continue with raysearch launch --resume --name {result.name}",
        )
        client.set_terminated(parent_id, status="KILLED")
    else:
        client.set_terminated(parent_id, status="FINISHED")
