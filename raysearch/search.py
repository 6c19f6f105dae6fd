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
- **Trials** (:mod:`raysearch.search_trial`): :func:`run_trial` turns a sample into an
  experiment config and runs it with :func:`raysearch.train.run_job`: a Train job named after
  the search and the trial number, so a retried or resumed trial continues its checkpoints and
  its MLflow run. Trial drivers hold a ``train_driver`` slot, not a CPU
  (:mod:`raysearch.runtime`).
- **MLflow**: one parent run per search (the space, the summary, the plots), opened and closed by
  :mod:`raysearch.search_runs`, and one child run per trial (``mlflow.parentRunId``). The
  driver's callbacks (:mod:`raysearch.search_callbacks`) close each child run, as only the
  driver knows how a trial ended: ``finished``, ``pruned`` (FINISHED with the
  ``raysearch.status`` tag, not FAILED) or ``failed`` with the reason.
- **Output**: one progress line per trial event instead of Ray's tables; at the end the summary
  table (CSV + Parquet), the best trial or Pareto front, and PNG plots
  (:mod:`raysearch.search_report`).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

from ray import tune

from raysearch import stopping, stores, tracking
from raysearch.private_api import local_tuner_run_config, result_grid_trials
from raysearch.runtime import TrialFootprint, ensure_ray, trial_capacity, trial_resources
from raysearch.search_callbacks import Progress, TrialRuns
from raysearch.search_report import (
    SearchResult,
    best_trials,
    format_table,
    space_param_names,
    summary_records,
    write_plots,
    write_summary,
)
from raysearch.search_runs import close_orphans, finish_parent, open_search_run, trial_rows
from raysearch.search_state import (
    FINISHED_KEY,
    MARKER_FILE,
    SearchPaths,
    optuna_storage_url,
    resolve_search_name,
    searches_folder,
)
from raysearch.search_strategy import (
    DefineByRun,
    StudySearch,
    build_sampler,
    build_scheduler,
    trial_folder_name,
)
from raysearch.search_trial import TrialContext, driver_resolved_settings, run_trial
from raysearch.spaces import SearchSpace
from trainables.errors import must

log = logging.getLogger(__name__)

# -- the search ---------------------------------------------------------------------------------


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
    footprint = _footprint(space)
    stores.check_store_for_writing(uri)
    ensure_ray(address, footprint, verbose=verbose)
    import ray

    cluster = ray.cluster_resources()
    resources = trial_resources(cluster, footprint)
    concurrency = _concurrency(space, footprint, cluster)

    client = tracking.client(uri)
    experiment = tracking.experiment_id(client, space.base.mlflow.experiment)
    sampler_name = "NSGA-II" if space.multi_objective else "TPE"
    parent_id = open_search_run(
        client,
        experiment,
        search,
        space,
        space_file,
        {
            "concurrency": concurrency,
            "sampler": sampler_name,
            "study": search,
            "optuna_url": paths.optuna_url,
        },
    )
    paths.root.mkdir(parents=True, exist_ok=True)
    if not resume:
        _write_marker(paths, space, space_file, parent_id)
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
        # The progress line first: closing a run may wait out a tracking server that is down.
        Progress(space, total, out),
        TrialRuns(uri, experiment, search, paths.jobs, space.base.checkpoint.keep),
    ]
    out(_starting_line(space, search, total, concurrency, sampler_name, resume))
    out(f"  MLflow run {parent_id} in experiment {space.base.mlflow.experiment!r} ({uri})")

    interrupted = False
    sigterm.arm()  # after ray.init, which installs a SIGTERM handler of its own
    try:
        run_config = _run_config(space, paths, callbacks, footprint, verbose=verbose)
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

    from mlflow.exceptions import MlflowException

    try:
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
    except MlflowException as error:  # the store went away after the trials ended
        what = f"read the trials' runs and close search {search}; resume it with --resume"
        raise tracking.unavailable(uri, what, error) from None


def _footprint(space: SearchSpace) -> TrialFootprint:
    """What one trial of ``space`` takes: its workers' CPUs and GPUs, and whether its one worker
    trains in the trial's own process."""
    scaling = space.base.scaling
    return TrialFootprint(
        scaling.workers,
        scaling.cpus_per_worker,
        scaling.gpus_per_worker,
        in_process=scaling.workers == 1 and scaling.in_process,
    )


def _write_marker(paths: SearchPaths, space: SearchSpace, space_file: Path | None, parent_id: str):
    """The search folder's marker: which space it searches and its parent run."""
    import json

    marker = {"space": space.name, "space_file": str(space_file), "parent_run_id": parent_id}
    (paths.root / MARKER_FILE).write_text(json.dumps(marker, indent=2))


def _run_config(space: SearchSpace, paths: SearchPaths, callbacks, footprint, *, verbose: bool):
    return tune.RunConfig(
        name="tune",
        storage_path=str(paths.root),
        callbacks=callbacks,
        verbose=2 if verbose else 0,
        # A worker group restarts its failed workers itself; a trial that runs its worker in
        # process is restarted by Tune, and resumes from its job's last checkpoint.
        failure_config=tune.FailureConfig(
            max_failures=space.base.checkpoint.max_failures if footprint.in_process else 0
        ),
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
    rows = trial_rows(trials_state, client, experiment, search)
    ended = sum(row.status != "unfinished" for row in rows)
    interrupted = interrupted or ended < total
    study = optuna.load_study(study_name=search, storage=paths.optuna_url)
    close_orphans(study, client, experiment, parent_id, interrupted, stop_reason=stop_reason)
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
    finish_parent(client, parent_id, result, space, paths)
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
