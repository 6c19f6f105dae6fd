"""Ray Train jobs end to end: scaling, worker failure, driver interrupt and resume, MLflow.

One local Ray instance serves the whole module (``ray_local`` in conftest); every job is tiny
(a few hundred images, a couple of epochs) so each takes seconds.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from raysearch import tracking
from raysearch.cli import main
from raysearch.config import load_config, validate_with_data
from raysearch.train import TrainingFailed, run_job

TINY = [
    "method.name=tecoa",
    "data.train_size=512",
    "data.eval_samples=64",
    "data.zeroshot_samples=24",
    "optim.batch_size=64",
    "optim.epochs=3",
    "optim.warmup_steps=2",
    "evaluation.steps=2",
    "attack.steps=1",
]


def _config(tmp_path: Path, *extra: str):
    overrides = [
        *TINY,
        f"checkpoint.storage_path={tmp_path / 'ray_results'}",
        f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
        *extra,
    ]
    config = load_config(None, overrides)
    return config, validate_with_data(config)


def _job_runs(result_or_config, uri: str, job: str):
    client = tracking.client(uri)
    experiment = client.get_experiment_by_name("raysearch")
    return client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`{tracking.JOB_TAG}` = '{job}'"
    )


def _epoch_steps(uri: str, run_id: str) -> list[int]:
    history = tracking.client(uri).get_metric_history(run_id, "epoch")
    return sorted(metric.step for metric in history)


def _train_worker_pids() -> list[int]:
    """Process ids of the Ray Train workers of this test session's Ray, asked of Ray itself
    (never found by scanning the machine, where another job's workers may run)."""
    from ray.util.state import list_actors

    actors = list_actors(filters=[("state", "=", "ALIVE")], detail=True)
    return [actor.pid for actor in actors if actor.class_name == "RayTrainWorker" and actor.pid]


def _wait_for_checkpoint(job_dir: Path, timeout: float = 180.0) -> None:
    """Wait until Ray Train has registered a checkpoint (it polls its workers periodically; a
    checkpoint written but not yet registered is not used for a restart)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (job_dir / "checkpoint_manager_snapshot.json").is_file():
            return
        time.sleep(0.2)
    raise AssertionError(f"no checkpoint was registered in {job_dir}")


def test_one_and_two_workers_end_alike(tmp_path, ray_local):
    results = {}
    for workers in (1, 2):
        config, forest = _config(tmp_path, f"scaling.workers={workers}", f"name=w{workers}")
        results[workers] = run_job(config, forest)
    one, two = results[1].metrics, results[2].metrics
    assert one["epoch"] == two["epoch"] == 2
    # Same global batch and seed; batch-norm statistics are per worker, so not bit-identical.
    assert math.isclose(one["loss"], two["loss"], rel_tol=0.15)
    assert abs(one["clean_leaf"] - two["clean_leaf"]) <= 0.05
    assert abs(one["robust_leaf"] - two["robust_leaf"]) <= 0.1


def test_a_killed_worker_resumes_from_its_checkpoint(tmp_path, ray_local):
    longer = ("optim.epochs=6", "data.train_size=1024")
    reference_config, forest = _config(tmp_path, "name=reference", *longer)
    reference = run_job(reference_config, forest)

    config, forest = _config(tmp_path, "name=killed", "checkpoint.max_failures=2", *longer)
    job_dir = tmp_path / "ray_results" / "killed"
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(result=run_job(config, forest)))
    thread.start()
    _wait_for_checkpoint(job_dir)
    pids = _train_worker_pids()
    assert pids, "no Ray Train worker process found"
    os.kill(pids[0], signal.SIGKILL)
    thread.join(timeout=300)
    result = outcome["result"]
    assert result.metrics["epoch"] == 5 and result.metrics["start_epoch"] >= 1
    assert math.isclose(result.metrics["loss"], reference.metrics["loss"], rel_tol=0.02)
    assert abs(result.metrics["robust_leaf"] - reference.metrics["robust_leaf"]) <= 0.05
    runs = _job_runs(result, result.tracking_uri, "killed")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert _epoch_steps(result.tracking_uri, runs[0].info.run_id) == list(range(6))


def test_an_interrupted_driver_continues_with_resume(tmp_path, ray_local):
    config, forest = _config(tmp_path, "name=interrupted", "optim.epochs=4")
    args = [
        *TINY,
        "optim.epochs=4",
        "name=interrupted",
        f"checkpoint.storage_path={tmp_path / 'ray_results'}",
        f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
    ]
    driver = subprocess.Popen(
        [sys.executable, "-m", "raysearch.cli", "train", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_for_checkpoint(tmp_path / "ray_results" / "interrupted", timeout=180)
    driver.send_signal(signal.SIGINT)
    driver.wait(timeout=120)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (run,) = _job_runs(None, uri, "interrupted")
    done_before = _epoch_steps(uri, run.info.run_id)
    assert done_before and done_before[-1] < 3

    assert main(["train", *args]) == 2  # the job exists: continuing it needs --resume
    result = run_job(config, forest, resume=True)
    # It continues from the last registered checkpoint (not from scratch); an epoch that ran
    # after that checkpoint runs again, and MLflow keeps its first record only.
    assert result.metrics["epoch"] == 3
    assert 1 <= result.metrics["start_epoch"] <= done_before[-1] + 1
    runs = _job_runs(None, uri, "interrupted")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert _epoch_steps(uri, runs[0].info.run_id) == [0, 1, 2, 3]


def test_a_first_override_with_a_slash_is_not_taken_for_a_config_file():
    from raysearch.cli import build_parser
    from raysearch.commands.train import _split_config_argument

    args = build_parser().parse_args(["train", "data.trees=embedded/form", "seed=1"])
    assert _split_config_argument(args) == (None, ["data.trees=embedded/form", "seed=1"])
    uri = "mlflow.tracking_uri=sqlite:////tmp/x.db"
    args = build_parser().parse_args(["train", uri])
    assert _split_config_argument(args) == (None, [uri])  # its slashes kept
    args = build_parser().parse_args(["train", "configs/run.yaml", "seed=1"])
    assert _split_config_argument(args) == (Path("configs/run.yaml"), ["seed=1"])


def test_resume_of_an_unknown_job_is_refused(tmp_path, capsys):
    args = [*TINY, "name=never", f"checkpoint.storage_path={tmp_path}"]
    assert main(["train", *args, "--resume"]) == 2
    assert "`--resume` must be" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("attack.eps=0", "`attack.eps` must be"),
        ("scaling.workers=0", "`scaling.workers` must be"),
        ("method.trees=[]", "`method.trees` must be"),
        ("optim.lrr=1", "`optim.lrr` must be"),
        ("seed=18446744073709551616", "`seed` must be an integer from 0 to 2**32 - 1"),
        ("scaling.workers=64", "`scaling.workers` must be small enough for"),
        ("scaling.gpus_per_worker=1", "`scaling.gpus_per_worker` must be 0, or small enough"),
    ],
)
def test_bad_config_gives_one_line_exit_2_and_no_mlflow_run(tmp_path, capsys, override, field):
    database = tmp_path / "mlflow.db"
    code = main(
        [
            "train",
            *TINY,
            override,
            f"mlflow.tracking_uri=sqlite:///{database}",
            f"checkpoint.storage_path={tmp_path}",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and field in err and len(err.splitlines()) == 1
    assert not database.exists()


def test_a_failing_job_exits_1_and_its_run_ends_failed_with_the_reason(tmp_path, capsys, ray_local):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = main(
        [
            "train",
            *TINY,
            "name=broken",
            "data.dataset=cifar10",
            f"data.root={tmp_path / 'no-cifar-here'}",
            "checkpoint.max_failures=0",
            f"checkpoint.storage_path={tmp_path / 'ray_results'}",
            f"mlflow.tracking_uri={uri}",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and "training failed" in err and "cifar10" in err
    (run,) = _job_runs(None, uri, "broken")
    assert run.info.status == "FAILED"
    assert "cifar10" in run.data.tags[tracking.ERROR_TAG]


def test_an_attempt_taken_over_stops_and_leaves_the_run_to_the_later_one(tmp_path, ray_local):
    # A job's one worker in this process (a search trial's path). After its first epoch, a
    # later attempt (the same job restarted on another node) claims the run.
    config, forest = _config(tmp_path, "name=taken")

    def later_attempt_starts(metrics, checkpoint):
        if metrics["epoch"] == 0:
            (run,) = _job_runs(None, uri, "taken")
            tracking.EpochLog(uri, run.info.run_id).begin()

    uri = config.mlflow.resolved_tracking_uri()
    with pytest.raises(TrainingFailed, match="AttemptSuperseded: .* before logging epoch 1"):
        run_job(config, forest, job="taken", after_report=later_attempt_starts)
    (run,) = _job_runs(None, uri, "taken")
    assert run.info.status == "RUNNING" and tracking.ERROR_TAG not in run.data.tags
    assert _epoch_steps(uri, run.info.run_id) == [0]  # epoch 1 neither logged ...
    checkpoints = sorted(path.name for path in (tmp_path / "ray_results" / "taken").iterdir())
    assert checkpoints == ["checkpoint_epoch_000000"]  # ... nor checkpointed


def test_a_relative_data_root_reaches_the_workers_as_an_absolute_path(tmp_path, monkeypatch):
    from raysearch.train import job_spec

    monkeypatch.chdir(tmp_path)
    config = load_config(None, ["data.root=data/cifar"])
    spec = job_spec(config, None, tracking_uri=None, run_id=None)
    assert spec.data_root == str(tmp_path / "data" / "cifar")
