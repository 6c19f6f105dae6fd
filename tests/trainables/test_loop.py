"""The job's loop with its one worker in this process (a one-worker search trial): its own
checkpoints, its reports, and a resume that ends as if the job had never stopped."""

from __future__ import annotations

import math

import pytest

from trainables.checkpoints import saved_checkpoints
from trainables.evaluate import AttackSettings
from trainables.loop import JobSpec, run_in_process
from trainables.methods import method_settings
from trainables.training import OptimSettings


class Crash(RuntimeError):
    pass


@pytest.fixture(scope="module")
def spec(base_model) -> JobSpec:
    return JobSpec(
        method=method_settings("tecoa"),
        optim=OptimSettings(epochs=3, batch_size=64, warmup_steps=2),
        evaluation=AttackSettings(eps=4 / 255, steps=1),
        eval_samples=32,
        train_size=256,
        final_profile=False,
    )


def test_every_epoch_is_reported_with_the_checkpoint_saved_for_it(spec, tmp_path):
    reports = []
    worker = run_in_process(
        spec, str(tmp_path), keep=2, after_report=lambda m, path: reports.append((m, path))
    )
    assert [metrics["epochs_completed"] for metrics, _ in reports] == [1, 2, 3]
    assert [path.rsplit("_", 1)[-1] for _, path in reports] == ["000000", "000001", "000002"]
    assert [p.name for p in saved_checkpoints(tmp_path)] == [
        "checkpoint_epoch_000001",
        "checkpoint_epoch_000002",
    ]
    assert worker.last_checkpoint == reports[-1][1]
    assert worker.last_metrics["epochs_completed"] == 3 and "test/clean_leaf" in worker.last_metrics


def test_a_job_stopped_after_an_epoch_resumes_and_ends_as_if_never_stopped(spec, tmp_path):
    reference = run_in_process(spec, str(tmp_path / "reference")).last_metrics

    def crash_after_the_first_epoch(metrics, path):
        if metrics["epochs_completed"] == 1:
            raise Crash("stopped")

    with pytest.raises(Crash):
        run_in_process(spec, str(tmp_path / "cut"), after_report=crash_after_the_first_epoch)
    resumed = run_in_process(spec, str(tmp_path / "cut")).last_metrics
    assert resumed["start_epoch"] == 1 and resumed["epochs_completed"] == 3
    # Model, optimiser, schedule and RNG states all come back: the same numbers.
    for name in ("loss", "clean_leaf", "robust_leaf", "step"):
        assert math.isclose(resumed[name], reference[name], rel_tol=1e-5), name
