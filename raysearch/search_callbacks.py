"""The search driver's Ray Tune callbacks: each trial's MLflow run closed with how the trial
ended, and the progress lines on the console."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray import tune

from raysearch import tracking
from raysearch.search_report import describe_params
from raysearch.search_state import (
    FINISHED_KEY,
    NUMBER_KEY,
    OVERRIDES_KEY,
    trial_job_name,
)
from raysearch.spaces import SearchSpace
from trainables.numbers import is_finite_number


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


def error_text(trial) -> str:
    try:
        error = trial.get_error()
    except Exception:  # the error file may be gone; the status says enough then
        return "the trial failed (its error could not be read)"
    if error is None:  # Tune records none for a trial whose process or node died
        return "Ray recorded no error: its process or node died"
    text = str(error).strip().splitlines()
    # Tune's error text ends with the innermost exception line.
    return " ".join(text[-1].split())[:2000] if text else type(error).__name__


class TrialRuns(tune.Callback):
    """Closes each trial's MLflow run when the trial ends, tagged with how it ended.

    Pruned runs end FINISHED with ``raysearch.status=pruned`` and their surplus checkpoints
    are removed (a stopped job leaves more than ``checkpoint.keep``). A run the tracking store
    cannot close now (a server down for longer than MLflow's retries) is closed at the next
    trial event, or when the search ends, instead of failing the search.
    """

    def __init__(self, tracking_uri: str, experiment: str, search: str, jobs: Path, keep: int):
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.search = search
        self.jobs_folder = jobs
        self.keep = keep
        self._client = None
        self.pending: dict[int, tuple[str, dict[str, str]]] = {}  # trial number: its ending

    @property
    def client(self):
        if self._client is None:
            self._client = tracking.client(self.tracking_uri)
        return self._client

    def __getstate__(self) -> dict:
        # Tune pickles its RunConfig with the callbacks; a database client does not pickle.
        return {**self.__dict__, "_client": None}

    def on_trial_complete(self, iteration, trials, trial, **info):
        status = "finished" if (trial.last_result or {}).get(FINISHED_KEY) else "pruned"
        tags = {tracking.STATUS_TAG: status}
        if status == "pruned":
            trim_checkpoints(
                self.jobs_folder / trial_job_name(self.search, int(trial.config[NUMBER_KEY])),
                self.keep,
            )
            epochs = (trial.last_result or {}).get("epochs_completed")
            tags["raysearch.pruned_after_epochs"] = str(epochs)
        self._end(trial, "FINISHED" if status == "pruned" else None, tags)

    def on_trial_error(self, iteration, trials, trial, **info):
        tags = {tracking.STATUS_TAG: "failed", tracking.ERROR_TAG: error_text(trial)[:5000]}
        self._end(trial, "FAILED", tags)

    def on_experiment_end(self, trials, **info):
        self.close_pending()

    def _end(self, trial, run_status: str | None, tags: dict[str, str]) -> None:
        """Tag the trial's run and set its status (None: the trial's job already closed it)."""
        number = trial.config.get(NUMBER_KEY)
        if number is None:
            return
        self.pending[int(number)] = (run_status or "", tags)
        self.close_pending()

    def close_pending(self) -> None:
        """Close the runs still waiting for the store; those it cannot reach now wait on."""
        for number, (run_status, tags) in list(self.pending.items()):
            job = trial_job_name(self.search, number)
            try:
                run = tracking.find_job_run(self.client, self.experiment, job)
                if run is not None:
                    for key, value in tags.items():
                        self.client.set_tag(run.info.run_id, key, value)
                    if run_status:
                        self.client.set_terminated(run.info.run_id, status=run_status)
            except tracking.store_errors():
                continue
            del self.pending[number]


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
            f"{name} {result[name]:.3f}" for name in shown if is_finite_number(result.get(name))
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
            if status == "finished"
            and is_finite_number((trial.last_result or {}).get(objective.metric))
        ]
        if finished:
            value, number = max(finished, key=lambda item: (sign * item[0], -item[1]))
            text += f"; best {objective.metric} {value:.3f} (trial {number})"
        return text

    def on_trial_recover(self, iteration, trials, trial, **info):
        # A trial that runs its worker in process failed; Tune starts it again.
        self._say(
            f"trial {self._number(trial)} failed ({error_text(trial)}); restarting it from its "
            "last checkpoint"
        )

    def on_trial_start(self, iteration, trials, trial, **info):
        number = self._number(trial)
        if trial.num_failures:
            self._say(f"trial {number} restarted (failure {trial.num_failures})")
            return
        self._say(f"trial {number} started: {describe_params(sampled_params(trial))}")

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
        self._say(f"trial {self._number(trial)} failed: {error_text(trial)}")
        self._say(self._tally(trials, trial, "failed"))


def recorded_status(trial, run) -> str:
    """How a trial ended, as :class:`TrialRuns` recorded it on its run when it ended.

    Tune marks the trials it stops on Ctrl-C TERMINATED like finished or pruned ones, without
    calling back: a trial whose run has no status tag did not end (it resumes with --resume).
    """
    recorded = run.data.tags.get(tracking.STATUS_TAG) if run is not None else None
    if recorded in ("finished", "pruned", "failed"):
        return recorded
    return "failed" if trial.status == "ERROR" else "unfinished"
