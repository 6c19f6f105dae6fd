"""One fine-tuning job on Ray Train, tracked in one MLflow run.

:func:`run_job` takes a validated :class:`~raysearch.config.ExperimentConfig`, opens (or reopens)
the job's MLflow run, launches a ``TorchTrainer`` over :func:`trainables.loop.train_loop_per_worker`
and closes the run FINISHED with the final evaluation and checkpoint as artifacts, FAILED with
the reason, or KILLED when Ctrl-C or SIGTERM stops it. Jobs are named deterministically
(:func:`raysearch.config.job_name`), so re-running with ``resume=True`` finds both the Ray Train
checkpoints and the MLflow run again.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from raysearch import stopping, stores, tracking
from raysearch.config import ExperimentConfig, config_to_dict, flatten, job_name
from raysearch.runtime import TrialFootprint, ensure_ray
from trainables.checkpoints import PROFILE_FILE
from trainables.errors import UserInputError, must
from trainables.loop import JobSpec
from trainables.outputs import check_output_folder

log = logging.getLogger(__name__)


class TrainingFailed(RuntimeError):
    """The job failed after it started; the message is the reason (its MLflow run is FAILED)."""


@dataclass
class JobResult:
    job: str
    run_id: str
    tracking_uri: str
    storage_path: str
    checkpoint: str | None
    metrics: dict = field(default_factory=dict)
    profile: dict | None = None


def absolute_local_path(root: str | None) -> str | None:
    """A local path (a data root, a suite file) as an absolute one; a URI or None as given. Ray
    runs workers and trials in folders of their own, where a path relative to where
    ``raysearch`` ran would name nothing."""
    if root is None or "://" in root:
        return root
    return str(Path(root).expanduser().resolve())


def _suite_for_workers(suite: str | None) -> str | None:
    """A suite file as an absolute path (the workers' working folder is not this one)."""
    from trainables.suites import SUITES

    return suite if suite is None or suite in SUITES else absolute_local_path(suite)


def job_spec(config: ExperimentConfig, forest, *, tracking_uri: str | None, run_id: str | None):
    """The worker-side settings of ``config`` (plain trainables dataclasses, the forest itself:
    tree files need not exist on the workers)."""
    return JobSpec(
        method=config.method,
        optim=config.optim,
        evaluation=config.evaluation,
        eval_samples=config.data.eval_samples,
        dataset=config.data.dataset,
        data_root=absolute_local_path(config.data.root),
        train_size=config.data.train_size,
        forest=forest,
        model_name=config.model.name,
        pretrained=config.model.pretrained,
        grad_checkpointing=config.model.grad_checkpointing,
        seed=config.seed,
        log_epoch=tracking.EpochLog(tracking_uri, run_id) if run_id is not None else None,
        zeroshot_suite=_suite_for_workers(config.data.zeroshot_suite),
        zeroshot_samples=config.data.zeroshot_samples,
        zeroshot_every_epoch=config.data.zeroshot_every_epoch,
        loader_workers=config.data.loader_workers,
    )


def _log_inputs(mlflow_client, run_id: str, config: ExperimentConfig, forest) -> None:
    from trainables.hierarchy.tree_dicts import forest_to_dict

    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "config.json").write_text(json.dumps(config_to_dict(config), indent=2))
        Path(folder, "trees.json").write_text(json.dumps(forest_to_dict(forest), indent=2))
        mlflow_client.log_artifacts(run_id, folder, "inputs")


def _log_outputs(mlflow_client, run_id: str, checkpoint_dir: str | None) -> dict | None:
    if checkpoint_dir is None:
        return None
    profile = None
    profile_path = Path(checkpoint_dir, PROFILE_FILE)
    if profile_path.is_file():
        profile = json.loads(profile_path.read_text())
        mlflow_client.log_artifact(run_id, str(profile_path), "evaluation")
    mlflow_client.log_artifacts(run_id, checkpoint_dir, "checkpoint")
    return profile


def run_job(
    config: ExperimentConfig,
    forest,
    *,
    resume: bool | None = False,
    address: str | None = None,
    job: str | None = None,
    storage: str | None = None,
    run_tags: dict[str, str] | None = None,
    extra_params: dict | None = None,
    callbacks: tuple = (),
    after_report=None,
    verbose: bool = True,
    close_failed_runs: bool = True,
) -> JobResult:
    """Run (or resume) the job of ``config`` to the end; see the module docstring.

    Args:
        resume: True continues a started job (refused when none started), False refuses one
            that has started, None continues it when there is one (a search's trials).
        job, storage: the job's name and where its checkpoints go (defaults: from ``config``).
        run_tags: tags of the MLflow run when it is created (a search's parent run id).
        extra_params: params logged with the config's (a search's sampled values).
        callbacks: Ray Train callbacks (a search forwards each report to Ray Tune).
        after_report: given, the job's one worker runs in this process, without Ray Train (no
            controller or worker group to start: a search trial); the loop keeps the
            checkpoints in the job's folder itself and calls ``after_report(metrics,
            checkpoint_path)`` after each epoch. A failure is not retried here: Tune restarts
            the trial, which resumes from the last checkpoint.
        verbose: show the workers' output on this console.
        close_failed_runs: end the MLflow run FAILED (or KILLED) when the job fails. A search
            closes its trials' runs itself: only its driver knows whether a trial that ended
            early failed or was stopped by the scheduler.
    """
    job = job or job_name(config)
    storage_text = str(storage or config.checkpoint.resolved_storage_path())
    storage = Path(storage_text)
    job_dir = storage / job
    if resume is None:
        resume = job_dir.exists()
    if job_dir.exists() and not resume:
        raise must(
            "--resume",
            f"given to continue job {job} (its checkpoints are in {job_dir}); or set name=",
            "not given",
        )
    if resume and not job_dir.exists():
        raise must("--resume", f"used for a job that has started (none in {storage})", job)

    scaling = config.scaling
    in_process = after_report is not None
    if in_process and (scaling.workers != 1 or "://" in storage_text):
        raise ValueError("a job runs in process only with one worker and local storage")
    footprint = TrialFootprint(scaling.workers, scaling.cpus_per_worker, scaling.gpus_per_worker)
    uri = config.mlflow.resolved_tracking_uri()
    # Before the MLflow run: a store that cannot take it, or a job that cannot fit, is refused
    # with nothing created.
    stores.check_store_for_writing(uri)
    if "://" not in storage_text:
        check_output_folder(storage, "checkpoint.storage_path")
    ensure_ray(address, footprint, verbose=verbose)

    mlflow_client = tracking.client(uri)
    experiment = tracking.experiment_id(mlflow_client, config.mlflow.experiment)
    run, created = tracking.get_or_create_job_run(mlflow_client, experiment, job, tags=run_tags)
    run_id = run.info.run_id
    if created:
        tracking.log_params(mlflow_client, run_id, {**flatten(config), **(extra_params or {})})
        _log_inputs(mlflow_client, run_id, config, forest)

    # SIGTERM (a supervisor stopping the job) ends its run KILLED, as Ctrl-C does.
    with stopping.SigtermGuard() as sigterm:
        try:
            sigterm.arm()  # after ray.init, which installs a SIGTERM handler of its own
            spec = job_spec(config, forest, tracking_uri=uri, run_id=run_id)
            if in_process:
                metrics, checkpoint_dir = _run_in_process(
                    spec, job_dir, config.checkpoint.keep, after_report
                )
            else:
                metrics, checkpoint_dir = _run_worker_group(spec, config, job, storage, callbacks)
        except UserInputError as error:
            sigterm.defer()  # each branch first: a SIGTERM now waits for the run to be closed
            if close_failed_runs:
                tracking.end_run(mlflow_client, run_id, error=str(error))
            raise
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (stopping.Stopped)
            sigterm.defer()
            if close_failed_runs:
                reason = sigterm.reason or "interrupted; continue with --resume"
                mlflow_client.set_tag(run_id, tracking.ERROR_TAG, reason)
                mlflow_client.set_terminated(run_id, status="KILLED")
            if sigterm.received:  # Ray Train re-raises its own KeyboardInterrupt
                raise stopping.Stopped(stopping.STOPPED_BY_SIGTERM) from None
            raise
        except Exception as error:  # the job failed after it started: record why, then report
            sigterm.defer()
            reason = failure_reason(error)
            # A superseded attempt leaves the run to the attempt that took it over.
            if close_failed_runs and tracking.AttemptSuperseded.__name__ not in reason:
                tracking.end_run(mlflow_client, run_id, error=reason)
            raise TrainingFailed(reason) from error

        sigterm.defer()  # the job has ended: a SIGTERM now waits for its run to be closed
        profile = _log_outputs(mlflow_client, run_id, checkpoint_dir)
        tracking.end_run(mlflow_client, run_id)
    return JobResult(
        job=job,
        run_id=run_id,
        tracking_uri=uri,
        storage_path=str(job_dir),
        checkpoint=checkpoint_dir,
        metrics=metrics,
        profile=profile,
    )


def _run_worker_group(
    spec, config: ExperimentConfig, job: str, storage: Path, callbacks
) -> tuple[dict, str | None]:
    """The job on a Ray Train worker group (Train keeps its checkpoints and restarts failed
    workers): its last metrics and checkpoint folder."""
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from trainables.loop import train_loop_per_worker

    scaling = config.scaling
    resources = {"CPU": scaling.cpus_per_worker}
    if scaling.gpus_per_worker:
        resources["GPU"] = scaling.gpus_per_worker
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"spec": spec},
        scaling_config=ScalingConfig(
            num_workers=scaling.workers,
            use_gpu=bool(scaling.gpus_per_worker),
            resources_per_worker=resources,
        ),
        run_config=RunConfig(
            name=job,
            storage_path=str(storage),
            failure_config=FailureConfig(max_failures=config.checkpoint.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=config.checkpoint.keep),
            logging_config=LoggingConfig(log_level="WARNING"),
            callbacks=list(callbacks),
        ),
    )
    result = trainer.fit()
    checkpoint = result.checkpoint.path if result.checkpoint is not None else None
    return dict(result.metrics or {}), checkpoint


def _run_in_process(spec, job_dir: Path, keep: int, after_report) -> tuple[dict, str | None]:
    """The job with its one worker in this process: its last metrics and checkpoint folder."""
    from trainables.loop import run_in_process

    worker = run_in_process(spec, str(job_dir), keep=keep, after_report=after_report)
    return worker.last_metrics, worker.last_checkpoint


def failure_reason(error: BaseException) -> str:
    """The innermost cause, in one line."""
    while error.__cause__ is not None:
        error = error.__cause__
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}"[:2000]
