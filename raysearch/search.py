"""A search: Ray Tune samples trials with Optuna, each trial is one Ray Train job, MLflow tracks
all of it.

- **Sampling** (:mod:`raysearch.search_strategy`): Ray's ``OptunaSearch`` with the space's
  define-by-run function asks a seeded TPE sampler (NSGA-II for two objectives: a Pareto
  front). Each search has its own study, named after the search, in a persistent SQLite storage
  beside the MLflow store, so a resumed search continues its study and two searches never mix.
- **Early stopping** (same module): ASHA compares trials on the first objective at rungs of
  *completed epochs* as the workers report them (Tune's iteration count restarts after a
  restore; the epochs do not). A trial ASHA stops enters the study as PRUNED, not as COMPLETE
  with its low-budget value (that would bias TPE towards cheap trials).
- **Trials**: :func:`run_trial` turns a sample into an experiment config and runs it with
  :func:`raysearch.train.run_job`: a Train job named after the search and the trial number, so
  a retried or resumed trial continues its checkpoints and its MLflow run. Trial drivers hold
  a ``train_driver`` slot, not a CPU (:mod:`raysearch.runtime`).
- **MLflow**: one parent run per search (the space, the summary, the plots) and one child run
  per trial (``mlflow.parentRunId``). The driver's callbacks (:mod:`raysearch.search_callbacks`)
  close each child run, as only the driver knows how a trial ended: ``finished``, ``pruned``
  (FINISHED with the ``raysearch.status`` tag, not FAILED) or ``failed`` with the reason.
- **Output**: one progress line per trial event instead of Ray's tables; at the end the summary
  table (CSV + Parquet), the best trial or Pareto front, and PNG plots
  (:mod:`raysearch.search_report`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray import tune

from raysearch import stopping, stores, tracking
from raysearch.config import config_to_dict, validate_with_data
from raysearch.private_api import local_tuner_run_config, result_grid_trials
from raysearch.runtime import TrialFootprint, ensure_ray, trial_capacity, trial_resources
from raysearch.search_callbacks import (
    Progress,
    TrialRuns,
    error_text,
    recorded_status,
    sampled_params,
)
from raysearch.search_report import (
    TrialRow,
    best_trials,
    format_table,
    summary_records,
    write_plots,
    write_summary,
)
from raysearch.search_state import (
    FINISHED_KEY,
    MARKER_FILE,
    NUMBER_KEY,
    OVERRIDES_KEY,
    SearchPaths,
    optuna_storage_url,
    resolve_search_name,
    searches_folder,
    trial_job_name,
)
from raysearch.search_strategy import (
    DefineByRun,
    StudySearch,
    build_sampler,
    build_scheduler,
    trial_folder_name,
)
from raysearch.spaces import SearchSpace
from raysearch.train import run_job
from trainables.errors import must
from trainables.numbers import is_finite_number

log = logging.getLogger(__name__)

# -- one trial ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrialContext:
    """What every trial of a search shares (sent once to the trial drivers)."""

    space: SearchSpace
    search: str
    parent_run_id: str
    jobs_folder: str
    verbose: bool = False
    pinned: dict[str, Any] = field(default_factory=dict)  # settings resolved by the driver
    in_process: bool = False  # the trials run their one worker themselves (no worker group)


def driver_resolved_settings(space: SearchSpace) -> dict[str, Any]:
    """Settings whose meaning depends on the working directory, made absolute here: a trial
    runs in a Ray worker whose working directory is not the one ``raysearch`` ran in."""
    base = space.base
    pinned: dict[str, Any] = {"mlflow.tracking_uri": base.mlflow.resolved_tracking_uri()}
    if base.data.root is not None and "://" not in base.data.root:
        pinned["data.root"] = str(Path(base.data.root).expanduser().resolve())
    return pinned


class ReportToTune:
    """Forwards each epoch's report of a job run in the trial's own process to Tune, as
    ``TuneReportCallback`` does for a worker group: the metrics, and the path of the checkpoint
    saved with them."""

    def __call__(self, metrics: dict, checkpoint_path: str) -> None:
        from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY

        tune.report({**metrics, CHECKPOINT_PATH_KEY: checkpoint_path})


def run_trial(config: dict, context: TrialContext) -> None:
    """The Tune function of one trial: the sampled config, run as a Ray Train job.

    Per-epoch metrics reach Tune from the workers (``TuneReportCallback``), or from this
    process when the trial runs its one worker itself (:class:`ReportToTune`); this function
    adds one final report with :data:`FINISHED_KEY` once every epoch ran.
    """
    from ray.tune.integration.ray_train import TuneReportCallback

    number = int(config[NUMBER_KEY])
    experiment = context.space.config_for({**config[OVERRIDES_KEY], **context.pinned})
    done = _finished_run(experiment, trial_job_name(context.search, number))
    if done is not None:
        # It ended before the search was interrupted (Tune's saved state predates that).
        tune.report({**done.data.metrics, FINISHED_KEY: 1, "mlflow_run_id": done.info.run_id})
        return
    forest = validate_with_data(experiment)
    sampled = {
        key: value for key, value in config.items() if key not in (OVERRIDES_KEY, NUMBER_KEY)
    }
    tags = {
        tracking.PARENT_TAG: context.parent_run_id,
        tracking.TRIAL_TAG: tune.get_context().get_trial_id(),
        "raysearch.search_name": context.search,
        "raysearch.optuna_trial": str(number),
    }
    result = run_job(
        experiment,
        forest,
        resume=None,  # a retried or resumed trial continues its checkpoints
        job=trial_job_name(context.search, number),
        storage=context.jobs_folder,
        run_tags=tags,
        extra_params={f"sampled.{key}": value for key, value in sampled.items()},
        callbacks=() if context.in_process else (TuneReportCallback(),),
        after_report=ReportToTune() if context.in_process else None,
        verbose=context.verbose,
        close_failed_runs=False,  # TrialRuns closes them: only the driver knows why it ended
    )
    final = {key: value for key, value in result.metrics.items() if is_finite_number(value)}
    final.update({FINISHED_KEY: 1, "mlflow_run_id": result.run_id})
    if result.checkpoint:
        final["checkpoint"] = result.checkpoint
    tune.report(final)


def _finished_run(experiment, job: str):
    """The job's MLflow run when it ended FINISHED after its last epoch (None otherwise)."""
    client = tracking.client(experiment.mlflow.resolved_tracking_uri())
    found = client.get_experiment_by_name(experiment.mlflow.experiment)
    run = tracking.find_job_run(client, found.experiment_id, job) if found else None
    if run is None or run.info.status != "FINISHED":
        return None
    if run.data.tags.get(tracking.STATUS_TAG, "finished") != "finished":
        return None  # pruned: its run is FINISHED too, but it never ran its last epoch
    return run


# -- the search ---------------------------------------------------------------------------------


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


@contextlib.contextmanager
def _quiet_console(verbose: bool):
    """Ray Tune's legacy reporter at verbosity 0 prints nothing; the Progress lines replace it."""
    if verbose:
        yield
        return
    import mlflow  # noqa: F401  (it configures its loggers on import: import it before ours)

    previous = os.environ.get("RAY_AIR_NEW_OUTPUT")
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    # Tune's errors become one line per trial; Optuna and MLflow announce every study and table.
    loggers = {"ray.tune": logging.CRITICAL, "optuna": logging.WARNING, "mlflow": logging.WARNING}
    levels = {name: logging.getLogger(name).level for name in loggers}
    for name, level in loggers.items():
        logging.getLogger(name).setLevel(level)
    try:
        yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        if previous is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = previous


def _concurrency(space: SearchSpace, footprint: TrialFootprint, cluster: dict) -> int:
    capacity = trial_capacity(cluster, footprint)
    if space.budget.concurrency == "auto":
        return capacity
    return max(1, min(int(space.budget.concurrency), capacity))


def _log_search_inputs(client, run_id: str, space: SearchSpace, space_file: Path | None, info):
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


def _rows(trials, client, experiment: str, search: str) -> list[TrialRow]:
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


def space_param_names(space: SearchSpace, rows: list[TrialRow]) -> list[str]:
    """The sampled parameters in the order of the space file (``depth.<tree>`` by tree)."""
    ordered = []
    for param in space.params:
        if param.kind == "depth":
            ordered.extend(f"depth.{tree}" for tree in param.ranges)
        else:
            ordered.append(param.name)
    seen = {name for row in rows for name in row.params}
    return [name for name in ordered if name in seen] + sorted(seen - set(ordered))


def _close_orphans(
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


def launch(
    space: SearchSpace,
    *,
    space_file: Path | None = None,
    trials: int | None = None,
    address: str | None = None,
    resume: bool = False,
    name: str | None = None,
    verbose: bool = False,
    out: Callable[[str], None] = print,
) -> SearchResult:
    """Run (or resume) a search to the end and write its report; see the module docstring.

    Args:
        space: the loaded search space; ``space_file`` is logged with the parent run.
        trials: overrides the budget's trial count (new searches only).
        address: a Ray cluster (default: a local Ray sized to this machine).
        resume: continue the search ``name`` (default: this space's latest).
        verbose: Ray's, Optuna's and the workers' own output on the console.
        out: where the progress lines go.

    Ctrl-C or SIGTERM (a supervisor stopping the search) interrupts it: the trials' open runs
    and the parent run end KILLED (``raysearch.error`` says why, e.g. "stopped by SIGTERM"), the
    report is written, and the result says ``interrupted``. A SIGTERM that arrives once the
    trials have ended waits for that clean-up.
    """
    with _quiet_console(verbose), stopping.SigtermGuard() as sigterm:
        return _launch(
            space,
            space_file=space_file,
            trials=trials,
            address=address,
            resume=resume,
            name=name,
            verbose=verbose,
            out=out,
            sigterm=sigterm,
        )


def _launch(
    space: SearchSpace,
    *,
    space_file: Path | None,
    trials: int | None,
    address: str | None,
    resume: bool,
    name: str | None,
    verbose: bool,
    out: Callable[[str], None],
    sigterm: stopping.SigtermGuard,
) -> SearchResult:

    if trials is not None:
        if resume:
            raise must("--trials", "left out with --resume (a search keeps its budget)", trials)
        if trials < 1:
            raise must("--trials", "an integer >= 1", trials)
    total = trials if trials is not None else space.budget.trials
    search = resolve_search_name(space, name, resume)
    searches = searches_folder(space)
    uri = space.base.mlflow.resolved_tracking_uri()
    paths = SearchPaths(searches / search, optuna_storage_url(uri, searches))
    scaling = space.base.scaling
    footprint = TrialFootprint(
        scaling.workers,
        scaling.cpus_per_worker,
        scaling.gpus_per_worker,
        in_process=scaling.workers == 1 and scaling.in_process,
    )
    stores.check_store_for_writing(uri)
    ensure_ray(address, footprint, verbose=verbose)
    import ray

    cluster = ray.cluster_resources()
    resources = trial_resources(cluster, footprint)
    concurrency = _concurrency(space, footprint, cluster)

    client = tracking.client(uri)
    experiment = tracking.experiment_id(client, space.base.mlflow.experiment)
    parent, created = tracking.get_or_create_search_run(client, experiment, search)
    parent_id = parent.info.run_id
    sampler_name = "NSGA-II" if space.multi_objective else "TPE"
    if created:
        info = {
            "concurrency": concurrency,
            "sampler": sampler_name,
            "study": search,
            "optuna_url": paths.optuna_url,
        }
        _log_search_inputs(client, parent_id, space, space_file, info)

    paths.root.mkdir(parents=True, exist_ok=True)
    if not resume:
        import json

        marker = {"space": space.name, "space_file": str(space_file), "parent_run_id": parent_id}
        (paths.root / MARKER_FILE).write_text(json.dumps(marker, indent=2))
    context = TrialContext(
        space,
        search,
        parent_id,
        str(paths.jobs),
        verbose,
        driver_resolved_settings(space),
        in_process=footprint.in_process,
    )
    trainable = tune.with_resources(tune.with_parameters(run_trial, context=context), resources)
    callbacks = [
        TrialRuns(uri, experiment, search, paths.jobs, space.base.checkpoint.keep),
        Progress(space, total, out),
    ]
    out(_starting_line(space, search, total, concurrency, sampler_name, resume))
    out(f"  MLflow run {parent_id} in experiment {space.base.mlflow.experiment!r} ({uri})")

    interrupted = False
    sigterm.arm()  # after ray.init, which installs a SIGTERM handler of its own
    try:
        run_config = tune.RunConfig(
            name="tune",
            storage_path=str(paths.root),
            callbacks=callbacks,
            verbose=2 if verbose else 0,
            # A worker group restarts its failed workers itself; a trial that runs its worker
            # in process is restarted by Tune, and resumes from its job's last checkpoint.
            failure_config=tune.FailureConfig(
                max_failures=space.base.checkpoint.max_failures if footprint.in_process else 0
            ),
        )
        if resume:
            tuner = _restored_tuner(paths, trainable, run_config)
        else:
            tuner = _new_tuner(
                space,
                paths,
                search,
                trainable,
                run_config,
                concurrency,
                total,
                in_process=footprint.in_process,
            )
        grid = tuner.fit()
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (stopping.Stopped)
        interrupted = True
        grid = None
    sigterm.defer()  # the clean-up below closes the runs: a SIGTERM now waits for it

    return _search_result(
        space,
        grid,
        client=client,
        uri=uri,
        experiment=experiment,
        search=search,
        parent_id=parent_id,
        paths=paths,
        total=total,
        interrupted=interrupted,
        stop_reason=sigterm.reason,
    )


def _search_result(
    space: SearchSpace,
    grid,
    *,
    client,
    uri: str,
    experiment: str,
    search: str,
    parent_id: str,
    paths: SearchPaths,
    total: int,
    interrupted: bool,
    stop_reason: str | None,
) -> SearchResult:
    """After Tune: the trials' table, nothing left RUNNING, the report written, the parent run
    closed. An interruption, or trials that did not end, make the result ``interrupted``."""
    import optuna

    trials_state = result_grid_trials(grid) if grid is not None else []
    rows = _rows(trials_state, client, experiment, search)
    ended = sum(row.status != "unfinished" for row in rows)
    interrupted = interrupted or ended < total
    study = optuna.load_study(study_name=search, storage=paths.optuna_url)
    _close_orphans(study, client, experiment, parent_id, interrupted, stop_reason=stop_reason)
    param_names = space_param_names(space, rows)
    result = SearchResult(
        name=search,
        parent_run_id=parent_id,
        tracking_uri=uri,
        experiment=space.base.mlflow.experiment,
        study_name=search,
        optuna_url=paths.optuna_url,
        rows=rows,
        best=best_trials(rows, space.metrics, space.modes),
        interrupted=interrupted,
        table=format_table(rows, param_names, space.metrics),
        stop_reason=stop_reason if interrupted else None,
    )
    records = summary_records(rows, param_names, space.metrics)
    result.artifacts.update(write_summary(records, paths.report))
    plots, notes = write_plots(study, space.metrics, paths.report)
    result.artifacts.update(plots)
    result.notes.extend(notes)
    _finish_parent(client, parent_id, result, space, paths)
    return result


def _starting_line(
    space: SearchSpace, search: str, total: int, concurrency: int, sampler: str, resume: bool
) -> str:
    """The first progress line: what runs, how many at once, on what, stopped how."""
    scheduler = (
        f"ASHA on {space.objectives[0].metric} (grace {space.budget.grace_epochs} epoch(s), "
        f"keeps 1/{space.budget.reduction_factor})"
        if space.budget.scheduler == "asha"
        else "no early stopping"
    )
    objectives = " and ".join(f"{o.metric} ({o.mode})" for o in space.objectives)
    verb = "resuming" if resume else "starting"
    return (
        f"{verb} search {search}: {total} trials, {concurrency} at a time, {sampler} on "
        f"{objectives}, {scheduler}"
    )


def _new_tuner(
    space: SearchSpace,
    paths: SearchPaths,
    search: str,
    trainable,
    run_config,
    concurrency: int,
    total: int,
    *,
    in_process: bool,
):
    """A Tuner for a new search: Optuna's study in ``paths.optuna_url``, ASHA, ``total`` trials
    with at most ``concurrency`` at once; ``in_process``: the trials train in their own process."""
    import optuna
    from ray.tune.search import ConcurrencyLimiter

    searcher = StudySearch(
        space=DefineByRun(space),
        metric=space.metrics if space.multi_objective else space.metrics[0],
        mode=space.modes if space.multi_objective else space.modes[0],
        sampler=build_sampler(space),
        study_name=search,
        storage=optuna.storages.RDBStorage(paths.optuna_url),
    )
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=ConcurrencyLimiter(searcher, max_concurrent=concurrency),
            scheduler=build_scheduler(space),
            num_samples=total,
            trial_dirname_creator=trial_folder_name,
            # The next trial runs in the process of the last one that ended: no new process to
            # start, no libraries to import again. Only for trials that train in process: their
            # thread ends at once when ASHA stops them (Tune reports synchronously), while a
            # worker group's trial is still inside its fit() two seconds later, and Tune then
            # fails the next trial instead.
            reuse_actors=in_process,
        ),
        run_config=run_config,
    )


def _restored_tuner(paths: SearchPaths, trainable, run_config):
    """The Tuner of an interrupted search, its unfinished and errored trials to run again."""
    tuner = tune.Tuner.restore(
        str(paths.tune),
        trainable=trainable,
        resume_unfinished=True,
        resume_errored=True,
        restart_errored=False,
    )
    restored = local_tuner_run_config(tuner)
    if restored is not None:
        # A restored Tuner brings back its pickled RunConfig: give it this process's callbacks
        # (fresh clock, this console) and verbosity. Through Ray Client the pickled callbacks
        # run as they were saved (they pickle for that).
        restored.callbacks = run_config.callbacks
        restored.verbose = run_config.verbose
    return tuner


def _finish_parent(client, parent_id: str, result: SearchResult, space: SearchSpace, paths):
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


__all__ = [
    "FINISHED_KEY",
    "SearchPaths",
    "SearchResult",
    "StudySearch",
    "TrialContext",
    "TrialRuns",
    "launch",
    "run_trial",
]
