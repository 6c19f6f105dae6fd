"""One trial of a search: the Tune function that turns a sample into an experiment config and
runs it as a Ray Train job (:func:`raysearch.train.run_job`), tracked as a child run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ray import tune

from raysearch import tracking
from raysearch.config import validate_with_data
from raysearch.search_state import FINISHED_KEY, NUMBER_KEY, OVERRIDES_KEY, trial_job_name
from raysearch.spaces import SearchSpace
from raysearch.train import absolute_local_path, run_job
from trainables.numbers import is_finite_number
from trainables.suites import SUITES


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
    if base.data.root is not None:
        pinned["data.root"] = absolute_local_path(base.data.root)
    suite = base.data.zeroshot_suite
    if suite is not None and suite not in SUITES:  # a suite file
        pinned["data.zeroshot_suite"] = absolute_local_path(suite)
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
    import ray
    from mlflow.exceptions import MlflowException
    from ray.tune.integration.ray_train import TuneReportCallback

    number = int(config[NUMBER_KEY])
    job = trial_job_name(context.search, number)
    experiment = context.space.config_for({**config[OVERRIDES_KEY], **context.pinned})
    uri = experiment.mlflow.resolved_tracking_uri()
    try:
        run = _job_run(experiment, job)
    except MlflowException as error:
        raise tracking.unavailable(uri, f"find the run of {job}", error) from None
    if _ended(run):
        # It ended before the search was interrupted (Tune's saved state predates that): it
        # ends again as it did, finished or pruned, without training further.
        tune.report(_ended_result(run))
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
        **tracking.node_tags(run, ray.get_runtime_context().get_node_id()),
    }
    try:
        result = run_job(
            experiment,
            forest,
            resume=None,  # a retried or resumed trial continues its checkpoints
            job=job,
            storage=context.jobs_folder,
            run_tags=tags,
            extra_params={f"sampled.{key}": value for key, value in sampled.items()},
            callbacks=() if context.in_process else (TuneReportCallback(),),
            after_report=ReportToTune() if context.in_process else None,
            verbose=context.verbose,
            close_failed_runs=False,  # TrialRuns closes them: only the driver knows why it ended
        )
    except MlflowException as error:  # opening or closing its run (training failures are not)
        raise tracking.unavailable(uri, f"open or close the run of {job}", error) from None
    final = {key: value for key, value in result.metrics.items() if is_finite_number(value)}
    if not final:
        # Every epoch had run before this attempt: the trial died (its node, say) between the
        # job's end and this report. Its run holds the last epoch's metrics.
        final = dict(tracking.client(uri).get_run(result.run_id).data.metrics)
    final.update({FINISHED_KEY: 1, "mlflow_run_id": result.run_id})
    if result.checkpoint:
        final["checkpoint"] = result.checkpoint
    tune.report(final)


def _job_run(experiment, job: str):
    """The job's MLflow run (None before its first start)."""
    client = tracking.client(experiment.mlflow.resolved_tracking_uri())
    found = client.get_experiment_by_name(experiment.mlflow.experiment)
    return tracking.find_job_run(client, found.experiment_id, job) if found else None


def _ended(run) -> bool:
    """Whether a job's run records that its trial ended: FINISHED after its last epoch, or
    stopped by ASHA (the driver tags it pruned before it closes it)."""
    if run is None:
        return False
    status = run.data.tags.get(tracking.STATUS_TAG, "finished")
    return status == "pruned" or (status == "finished" and run.info.status == "FINISHED")


def _ended_result(run) -> dict:
    """The report that ends a trial as its run says it ended: with :data:`FINISHED_KEY` when it
    ran every epoch, without it (pruned) at the epoch ASHA judged otherwise."""
    result = {**run.data.metrics, "mlflow_run_id": run.info.run_id}
    if run.data.tags.get(tracking.STATUS_TAG, "finished") == "finished":
        return {**result, FINISHED_KEY: 1}
    judged = run.data.tags.get("raysearch.pruned_after_epochs", "")
    if judged.isdigit():
        result["epochs_completed"] = int(judged)
    return result
