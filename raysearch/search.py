"""A search: Ray Tune samples trials with Optuna, each trial is one Ray Train job, MLflow tracks
all of it.

- **Sampling**: :class:`StudySearch` (Ray's ``OptunaSearch`` with the space's define-by-run
  function) asks a seeded TPE sampler (NSGA-II for two objectives: a Pareto front). Each search
  has its own study, named after the search, in a persistent SQLite storage beside the MLflow
  store, so a resumed search continues its study and two searches never mix.
- **Early stopping**: :class:`EpochASHA` compares trials on the first objective at rungs of
  *completed epochs* as the workers report them (Tune's iteration count restarts after a
  restore; the epochs do not). A trial ASHA stops enters the study as PRUNED, not as COMPLETE
  with its low-budget value (that would bias TPE towards cheap trials).
- **Trials**: :func:`run_trial` turns a sample into an experiment config and runs it with
  :func:`raysearch.train.run_job`: a Train job named after the search and the trial number, so
  a retried or resumed trial continues its checkpoints and its MLflow run. Trial drivers hold
  a ``train_driver`` slot, not a CPU (:mod:`raysearch.runtime`).
- **MLflow**: one parent run per search (the space, the summary, the plots) and one child run
  per trial (``mlflow.parentRunId``). :class:`TrialRuns` closes each child run from the driver,
  the only place that knows how a trial ended: ``finished``, ``pruned`` (FINISHED with the
  ``raysearch.status`` tag, not FAILED) or ``failed`` with the reason.
- **Output**: :class:`Progress` prints one line per event instead of Ray's tables; at the end
  the summary table (CSV + Parquet), the best trial or Pareto front, and PNG plots.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler
from ray.tune.search.optuna import OptunaSearch

from raysearch import tracking
from raysearch.config import config_to_dict, validate_with_data
from raysearch.runtime import TrialFootprint, driver_resources, ensure_ray, trial_capacity
from raysearch.search_report import (
    TrialRow,
    best_trials,
    describe_params,
    format_table,
    summary_records,
    write_plots,
    write_summary,
)
from raysearch.train import run_job
from search_spaces.loader import SearchSpace
from trainables.errors import must

log = logging.getLogger(__name__)

#: Keys of a trial's Tune config besides the sampled parameters.
OVERRIDES_KEY = "overrides"
NUMBER_KEY = "optuna_trial"
#: Reported once by a trial that ran all its epochs (absent: stopped early, or failed).
FINISHED_KEY = "trial_finished"
SEARCHES_FOLDER = "searches"
OPTUNA_FILE = "optuna.db"
REPORT_FOLDER = "report"


# -- where a search lives -----------------------------------------------------------------------


@dataclass(frozen=True)
class SearchPaths:
    """The folders and stores of one search.

    Attributes:
        root: ``<storage_path>/searches/<name>``: Tune's state, the trials' Train jobs, the report.
        optuna_url: the study's storage (SQLite beside the MLflow database when that is local).
    """

    root: Path
    optuna_url: str

    @property
    def tune(self) -> Path:
        return self.root / "tune"

    @property
    def jobs(self) -> Path:
        return self.root / "jobs"

    @property
    def report(self) -> Path:
        return self.root / REPORT_FOLDER


def searches_folder(space: SearchSpace) -> Path:
    storage = space.base.checkpoint.resolved_storage_path()
    if "://" in storage:
        raise must(
            "checkpoint.storage_path",
            "a folder for a search (Tune's own state is kept locally; a shared file system "
            "mounted on every node works on a cluster)",
            storage,
        )
    return Path(storage) / SEARCHES_FOLDER


def optuna_storage_url(tracking_uri: str, searches: Path) -> str:
    """Beside a local MLflow database; in the searches folder for a remote tracking server."""
    if tracking_uri.startswith("sqlite:///"):
        database = Path(tracking_uri.removeprefix("sqlite:///")).expanduser().resolve()
        return f"sqlite:///{database.parent / OPTUNA_FILE}"
    return f"sqlite:///{searches.resolve() / OPTUNA_FILE}"


MARKER_FILE = "search.json"


def _started(folder: Path) -> bool:
    return (folder / "tune").is_dir() and tune.Tuner.can_restore(str(folder / "tune"))


def _space_of(folder: Path) -> str | None:
    import json

    try:
        return json.loads((folder / MARKER_FILE).read_text()).get("space")
    except (OSError, ValueError):
        return None


def resolve_search_name(space: SearchSpace, name: str | None, resume: bool) -> str:
    """The search's name: ``--name``, or ``<space name>-<date>-<time>`` for a new search and
    the latest started search of this space for ``--resume``."""
    searches = searches_folder(space)
    if name is not None:
        from search_spaces.loader import _NAME

        if not _NAME.fullmatch(name):
            raise must("--name", "1 to 64 characters from A-Z a-z 0-9 . _ -", name)
        started = _started(searches / name)
        if resume and not started:
            raise must("--name", f"a started search in {searches} to resume", name)
        if not resume and (searches / name).exists():
            raise must(
                "--name", f"a new search name ({name} exists: add --resume to continue it)", name
            )
        return name
    if resume:
        candidates = sorted(
            (
                folder
                for folder in searches.glob("*")
                if _space_of(folder) == space.name and _started(folder)
            ),
            key=lambda folder: (folder / "tune").stat().st_mtime,
        )
        if not candidates:
            raise must("--resume", f"used after a search of {space.name} started", "none found")
        return candidates[-1].name
    stamp = time.strftime("%Y%m%d-%H%M%S")
    prefix = space.name[:44]  # the name stays within the 64 characters `--name` accepts
    name = f"{prefix}-{stamp}"
    suffix = 1
    while (searches / name).exists():  # two launches within one second
        suffix += 1
        name = f"{prefix}-{stamp}-{suffix}"
    return name


def trial_job_name(search: str, number: int) -> str:
    return f"{search}-trial-{number:03d}"


# -- Optuna and ASHA, adapted -------------------------------------------------------------------


class StudySearch(OptunaSearch):
    """OptunaSearch that records how each trial ended and at which epoch it reported.

    - A trial whose last result lacks :data:`FINISHED_KEY` and did not fail was stopped early:
      it enters the study as PRUNED (OptunaSearch would enter it COMPLETE with its low-budget
      value, which biases TPE).
    - Intermediate values are reported by completed epochs, not Tune iterations (those restart
      when a search resumes), and only when the result carries the metric.
    - The Optuna trial number goes into the trial's config, so runs and jobs are named by it.
    """

    def suggest(self, trial_id: str) -> dict | None:
        config = super().suggest(trial_id)
        if config is not None:
            config[NUMBER_KEY] = self._ot_trials[trial_id].number
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id not in self._completed_trials:
            self._report(trial_id, result)

    def _report(self, trial_id: str, result: dict) -> None:
        if isinstance(self.metric, list) or trial_id not in self._ot_trials:
            return  # Optuna keeps no intermediate values for several objectives
        value, step = result.get(self.metric), result.get("epochs_completed")
        if _finite(value) and step is not None:
            trial = self._ot_trials[trial_id]
            stored = self._stored(trial_id)
            if stored.state.name == "RUNNING" and int(step) not in stored.intermediate_values:
                trial.report(float(value), int(step))

    def _stored(self, trial_id: str):
        trial = self._ot_trials[trial_id]
        return trial.storage.get_trial(trial._trial_id)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        if self._stored(trial_id).state.is_finished():
            # Told before the driver was killed, and the searcher's saved state predates it.
            self._completed_trials.add(trial_id)
            return
        from optuna.trial import TrialState

        metrics = self.metric if isinstance(self.metric, list) else [self.metric]
        values = [(result or {}).get(metric) for metric in metrics]
        if error:
            state, told = TrialState.FAIL, None
        elif not (result or {}).get(FINISHED_KEY):
            # Tune does not pass the result that made ASHA stop a trial to on_trial_result.
            self._report(trial_id, result or {})
            state, told = TrialState.PRUNED, None
        elif all(_finite(value) for value in values):
            state, told = TrialState.COMPLETE, [float(value) for value in values]
        else:
            state, told = TrialState.FAIL, None
        self._ot_study.tell(self._ot_trials[trial_id], told, state=state)
        self._completed_trials.add(trial_id)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class DefineByRun:
    """The space's define-by-run function as OptunaSearch wants it: the sampled config goes
    under :data:`OVERRIDES_KEY` (a class, not a lambda: the searcher's state is pickled)."""

    def __init__(self, space: SearchSpace):
        self.space = space

    def __call__(self, trial) -> dict:
        return {OVERRIDES_KEY: self.space.suggest(trial)}


def trial_folder_name(trial) -> str:
    return f"trial-{trial.trial_id}"


class EpochASHA(AsyncHyperBandScheduler):
    """ASHA on completed epochs that never stops a trial on its last epoch.

    A trial's last epoch ends its job anyway; stopping it there would kill the trial before it
    records its final evaluation and closes its run, and it would count as pruned.
    """

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        decision = super().on_trial_result(tune_controller, trial, result)
        if result.get("epochs_completed", 0) >= result.get("epochs_total", math.inf):
            return TrialScheduler.CONTINUE
        return decision


def build_sampler(space: SearchSpace):
    import optuna

    if space.multi_objective:
        return optuna.samplers.NSGAIISampler(seed=space.budget.seed)
    return optuna.samplers.TPESampler(seed=space.budget.seed)


def build_scheduler(space: SearchSpace):
    if space.budget.scheduler == "none":
        return None
    objective = space.objectives[0]
    return EpochASHA(
        time_attr="epochs_completed",
        metric=objective.metric,
        mode=objective.mode,
        max_t=max_epochs(space) + 1,  # +1: ASHA's own stop at max_t never fires
        grace_period=space.budget.grace_epochs,
        reduction_factor=space.budget.reduction_factor,
        stop_last_trials=False,
    )


def max_epochs(space: SearchSpace) -> int:
    """The most epochs any trial runs (``optim.epochs`` may itself be searched)."""
    return space.max_epochs


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


def driver_resolved_settings(space: SearchSpace) -> dict[str, Any]:
    """Settings whose meaning depends on the working directory, made absolute here: a trial
    runs in a Ray worker whose working directory is not the one ``raysearch`` ran in."""
    base = space.base
    pinned: dict[str, Any] = {"mlflow.tracking_uri": base.mlflow.resolved_tracking_uri()}
    if base.data.root is not None and "://" not in base.data.root:
        pinned["data.root"] = str(Path(base.data.root).expanduser().resolve())
    return pinned


def run_trial(config: dict, context: TrialContext) -> None:
    """The Tune function of one trial: the sampled config, run as a Ray Train job.

    Per-epoch metrics reach Tune from the workers (``TuneReportCallback``); this function adds
    one final report with :data:`FINISHED_KEY` once every epoch ran.
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
        callbacks=(TuneReportCallback(),),
        verbose=context.verbose,
        close_failed_runs=False,  # TrialRuns closes them: only the driver knows why it ended
    )
    final = {key: value for key, value in result.metrics.items() if _finite(value)}
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


# -- the driver's callbacks -----------------------------------------------------------------------


def sampled_params(trial) -> dict[str, Any]:
    """What Optuna sampled for a Tune trial, by parameter name."""
    return {k: v for k, v in trial.config.items() if k not in (OVERRIDES_KEY, NUMBER_KEY)}


def trial_status(trial) -> str:
    """finished / pruned / failed / unfinished, from Tune's trial and its last result."""
    if trial.status == "ERROR":
        return "failed"
    if trial.status != "TERMINATED":
        return "unfinished"
    return "finished" if (trial.last_result or {}).get(FINISHED_KEY) else "pruned"


def _error_text(trial) -> str:
    try:
        error = trial.get_error()
    except Exception:  # the error file may be gone; the status says enough then
        error = None
    if error is None:
        return "the trial failed (no error recorded)"
    text = str(error).strip().splitlines()
    # Tune's error text ends with the innermost exception line.
    return " ".join(text[-1].split())[:2000] if text else type(error).__name__


class TrialRuns(tune.Callback):
    """Closes each trial's MLflow run when the trial ends, tagged with how it ended.

    Pruned runs end FINISHED with ``raysearch.status=pruned`` and their surplus checkpoints
    are removed (a stopped job leaves more than ``checkpoint.keep``).
    """

    def __init__(self, tracking_uri: str, experiment: str, search: str, jobs: Path, keep: int):
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.search = search
        self.jobs_folder = jobs
        self.keep = keep
        self._client = None

    @property
    def client(self):
        if self._client is None:
            self._client = tracking.client(self.tracking_uri)
        return self._client

    def __getstate__(self) -> dict:
        # Tune pickles its RunConfig with the callbacks; a database client does not pickle.
        return {**self.__dict__, "_client": None}

    def _run_id(self, trial) -> str | None:
        number = trial.config.get(NUMBER_KEY)
        if number is None:
            return None
        run = tracking.find_job_run(
            self.client, self.experiment, trial_job_name(self.search, int(number))
        )
        return run.info.run_id if run is not None else None

    def on_trial_complete(self, iteration, trials, trial, **info):
        run_id = self._run_id(trial)
        status = "finished" if (trial.last_result or {}).get(FINISHED_KEY) else "pruned"
        if status == "pruned":
            trim_checkpoints(
                self.jobs_folder / trial_job_name(self.search, int(trial.config[NUMBER_KEY])),
                self.keep,
            )
        if run_id is None:
            return
        self.client.set_tag(run_id, tracking.STATUS_TAG, status)
        if status == "pruned":
            epochs = (trial.last_result or {}).get("epochs_completed")
            self.client.set_tag(run_id, "raysearch.pruned_after_epochs", str(epochs))
            self.client.set_terminated(run_id, status="FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        run_id = self._run_id(trial)
        if run_id is None:
            return
        self.client.set_tag(run_id, tracking.STATUS_TAG, "failed")
        tracking.end_run(self.client, run_id, error=_error_text(trial))


def trim_checkpoints(job_folder: Path, keep: int) -> None:
    """Keep the ``keep`` latest ``checkpoint_*`` folders of a Train job (names sort by time)."""
    checkpoints = sorted(p for p in job_folder.glob("checkpoint_*") if p.is_dir())
    for folder in checkpoints[: max(0, len(checkpoints) - keep)]:
        shutil.rmtree(folder, ignore_errors=True)


class Progress(tune.Callback):
    """One line per trial event and a running tally, instead of Ray's tables.

    The tally is counted from Tune's trials each time, so a resumed search counts the trials
    that ended before it was interrupted.
    """

    def __init__(self, space: SearchSpace, total: int, out: Callable[[str], None]):
        self.space = space
        self.total = total
        self.out = out
        self.started = time.monotonic()

    def __getstate__(self) -> dict:
        # Tune pickles its RunConfig with the callbacks; the console is this process's.
        return {**self.__dict__, "out": print}

    def _say(self, text: str) -> None:
        elapsed = int(time.monotonic() - self.started)
        self.out(f"[{elapsed // 60:02d}:{elapsed % 60:02d}] {text}")

    @staticmethod
    def _number(trial) -> int:
        return int(trial.config.get(NUMBER_KEY, -1))

    def _metrics(self, result: dict) -> str:
        shown = dict.fromkeys([*self.space.metrics, "clean_leaf", "robust_leaf"])
        return ", ".join(
            f"{name} {result[name]:.3f}" for name in shown if _finite(result.get(name))
        )

    def _tally(self, trials, ending, outcome: str) -> str:
        # Tune calls back before it marks the ending trial TERMINATED / ERROR.
        statuses = [outcome if t is ending else trial_status(t) for t in trials]
        counts = {status: statuses.count(status) for status in ("finished", "pruned", "failed")}
        running = sum(t.status == "RUNNING" for t in trials if t is not ending)
        text = (
            f"{sum(counts.values())}/{self.total} done ({counts['finished']} finished, "
            f"{counts['pruned']} pruned, {counts['failed']} failed), {running} running"
        )
        objective = self.space.objectives[0]
        sign = 1 if objective.mode == "max" else -1
        finished = [
            (trial.last_result[objective.metric], self._number(trial))
            for trial, status in zip(trials, statuses, strict=True)
            if status == "finished" and _finite((trial.last_result or {}).get(objective.metric))
        ]
        if finished:
            value, number = max(finished, key=lambda item: (sign * item[0], -item[1]))
            text += f"; best {objective.metric} {value:.3f} (trial {number})"
        return text

    def on_trial_start(self, iteration, trials, trial, **info):
        self._say(f"trial {self._number(trial)} started: {describe_params(sampled_params(trial))}")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get(FINISHED_KEY):
            return
        epoch, total = result.get("epochs_completed"), result.get("epochs_total")
        if epoch is None:
            return
        self._say(
            f"trial {self._number(trial)} epoch {int(epoch)}/{int(total)}: {self._metrics(result)}"
        )

    def on_trial_complete(self, iteration, trials, trial, **info):
        result = trial.last_result or {}
        number = self._number(trial)
        outcome = "finished" if result.get(FINISHED_KEY) else "pruned"
        if outcome == "finished":
            self._say(f"trial {number} finished: {self._metrics(result)}")
        else:
            epoch = result.get("epochs_completed", "?")
            self._say(f"trial {number} pruned by ASHA after epoch {epoch}: {self._metrics(result)}")
        self._say(self._tally(trials, trial, outcome))

    def on_trial_error(self, iteration, trials, trial, **info):
        self._say(f"trial {self._number(trial)} failed: {_error_text(trial)}")
        self._say(self._tally(trials, trial, "failed"))


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


def _trials_of(grid) -> list:
    # The ResultGrid's trials carry Tune's status (TERMINATED / ERROR / RUNNING ...), which the
    # public Result does not.
    return list(grid._experiment_analysis.trials)


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
                error=_error_text(trial) if status == "failed" else None,
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


def recorded_status(trial, run) -> str:
    """How a trial ended, as :class:`TrialRuns` recorded it on its run when it ended.

    Tune marks the trials it stops on Ctrl-C TERMINATED like finished or pruned ones, without
    calling back: a trial whose run has no status tag did not end (it resumes with --resume).
    """
    recorded = run.data.tags.get(tracking.STATUS_TAG) if run is not None else None
    if recorded in ("finished", "pruned", "failed"):
        return recorded
    return "failed" if trial.status == "ERROR" else "unfinished"


def _close_orphans(study, client, experiment: str, parent_run_id: str, interrupted: bool) -> None:
    """Leave nothing RUNNING: Optuna trials no Tune trial will finish (a driver killed between
    asking and saving) end FAIL; an interrupted search's open child runs end KILLED."""
    from optuna.trial import TrialState

    if not interrupted:
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            study.tell(trial.number, state=TrialState.FAIL)
    running = f"tags.`{tracking.PARENT_TAG}` = '{parent_run_id}' and attributes.status = 'RUNNING'"
    runs = client.search_runs([experiment], filter_string=running)
    for run in runs:
        reason = "search interrupted; continue with raysearch launch --resume"
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
    """
    with _quiet_console(verbose):
        return _launch(space, space_file, trials, address, resume, name, verbose, out)


def _launch(space, space_file, trials, address, resume, name, verbose, out) -> SearchResult:
    import optuna

    if trials is not None:
        if resume:
            raise must("--trials", "left out with --resume (a search keeps its budget)", trials)
        if trials < 1:
            raise must("--trials", "an integer >= 1", trials)
    total = trials if trials is not None else space.budget.trials
    search = resolve_search_name(space, name, resume)
    paths = SearchPaths(
        searches_folder(space) / search,
        optuna_storage_url(space.base.mlflow.resolved_tracking_uri(), searches_folder(space)),
    )
    scaling = space.base.scaling
    footprint = TrialFootprint(scaling.workers, scaling.cpus_per_worker, scaling.gpus_per_worker)
    ensure_ray(address, footprint.worker_cpus, verbose=verbose)
    import ray

    cluster = ray.cluster_resources()
    resources = driver_resources(cluster, footprint)
    concurrency = _concurrency(space, footprint, cluster)

    uri = space.base.mlflow.resolved_tracking_uri()
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
        space, search, parent_id, str(paths.jobs), verbose, driver_resolved_settings(space)
    )
    trainable = tune.with_resources(tune.with_parameters(run_trial, context=context), resources)
    callbacks = [
        TrialRuns(uri, experiment, search, paths.jobs, space.base.checkpoint.keep),
        Progress(space, total, out),
    ]
    verb = "resuming" if resume else "starting"
    scheduler_text = (
        f"ASHA on {space.objectives[0].metric} (grace {space.budget.grace_epochs} epoch(s), "
        f"keeps 1/{space.budget.reduction_factor})"
        if space.budget.scheduler == "asha"
        else "no early stopping"
    )
    out(
        f"{verb} search {search}: {total} trials, {concurrency} at a time, {sampler_name} on "
        + " and ".join(f"{o.metric} ({o.mode})" for o in space.objectives)
        + f", {scheduler_text}"
    )
    out(f"  MLflow run {parent_id} in experiment {space.base.mlflow.experiment!r} ({uri})")

    interrupted = False
    try:
        run_config = tune.RunConfig(
            name="tune",
            storage_path=str(paths.root),
            callbacks=callbacks,
            verbose=2 if verbose else 0,
            failure_config=tune.FailureConfig(max_failures=0),
        )
        if resume:
            tuner = tune.Tuner.restore(
                str(paths.tune),
                trainable=trainable,
                resume_unfinished=True,
                resume_errored=True,
                restart_errored=False,
            )
        else:
            searcher = StudySearch(
                space=DefineByRun(space),
                metric=space.metrics if space.multi_objective else space.metrics[0],
                mode=space.modes if space.multi_objective else space.modes[0],
                sampler=build_sampler(space),
                study_name=search,
                storage=optuna.storages.RDBStorage(paths.optuna_url),
            )
            from ray.tune.search import ConcurrencyLimiter

            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(
                    search_alg=ConcurrencyLimiter(searcher, max_concurrent=concurrency),
                    scheduler=build_scheduler(space),
                    num_samples=total,
                    trial_dirname_creator=trial_folder_name,
                ),
                run_config=run_config,
            )
        local = getattr(tuner, "_local_tuner", None)  # None through Ray Client
        if resume and local is not None:
            # A restored Tuner brings back its pickled RunConfig: give it this process's
            # callbacks (fresh clock, this console) and verbosity. Through Ray Client the
            # pickled callbacks run as they were saved (they pickle for that).
            restored = local.get_run_config()
            restored.callbacks = callbacks
            restored.verbose = run_config.verbose
        grid = tuner.fit()
    except KeyboardInterrupt:
        interrupted = True
        grid = None

    trials_state = _trials_of(grid) if grid is not None else []
    rows = _rows(trials_state, client, experiment, search)
    ended = sum(row.status != "unfinished" for row in rows)
    interrupted = interrupted or ended < total
    study = optuna.load_study(study_name=search, storage=paths.optuna_url)
    _close_orphans(study, client, experiment, parent_id, interrupted)
    best = best_trials(rows, space.metrics, space.modes)
    param_names = space_param_names(space, rows)
    result = SearchResult(
        name=search,
        parent_run_id=parent_id,
        tracking_uri=uri,
        experiment=space.base.mlflow.experiment,
        study_name=search,
        optuna_url=paths.optuna_url,
        rows=rows,
        best=best,
        interrupted=interrupted,
        table=format_table(rows, param_names, space.metrics),
    )
    records = summary_records(rows, param_names, space.metrics)
    result.artifacts.update(write_summary(records, paths.report))
    plots, notes = write_plots(study, space.metrics, paths.report)
    result.artifacts.update(plots)
    result.notes.extend(notes)
    _finish_parent(client, parent_id, result, space, paths)
    return result


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
            if _finite(best.metrics.get(metric)):
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
            f"interrupted; continue with raysearch launch --resume --name {result.name}",
        )
        client.set_terminated(parent_id, status="KILLED")
    else:
        client.set_terminated(parent_id, status="FINISHED")


__all__ = [
    "EpochASHA",
    "FINISHED_KEY",
    "SearchPaths",
    "SearchResult",
    "StudySearch",
    "TrialContext",
    "TrialRuns",
    "launch",
    "run_trial",
]
