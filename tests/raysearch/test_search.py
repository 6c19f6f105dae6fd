"""Searches end to end on the shared local Ray: MLflow parent and child runs, Optuna's study,
ASHA pruning, and a search whose driver is killed and resumed.

Every trial is tiny (512 images, 2 epochs, 64 evaluation images), so a trial takes about 20 s.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml

from raysearch import tracking
from raysearch.cli import main
from raysearch.search import launch
from raysearch.spaces import load_space
from tests.raysearch.search_fixtures import (
    LARGE_EPS,
    PRUNING_TRIALS,
    SMALL_EPS,
    TRIAL_PATHS,
    space_file,
)


def _children(searched) -> list:
    parent = searched["result"].parent_run_id
    return [run for run in searched["runs"] if run.data.tags.get(tracking.PARENT_TAG) == parent]


def test_a_search_has_one_parent_run_and_one_child_run_per_trial(searched_either_path):
    searched = searched_either_path
    result = searched["result"]
    parents = [r for r in searched["runs"] if r.data.tags.get(tracking.KIND_TAG) == "search"]
    assert [p.info.run_id for p in parents] == [result.parent_run_id]
    assert parents[0].info.status == "FINISHED"
    children = _children(searched)
    assert len(children) == len(result.rows) == 3
    assert sorted(r.data.tags["raysearch.optuna_trial"] for r in children) == ["0", "1", "2"]
    assert {row.run_id for row in result.rows} == {r.info.run_id for r in children}
    artifacts = {a.path for a in searched["client"].list_artifacts(result.parent_run_id, "summary")}
    assert {"summary/summary.csv", "summary/summary.parquet", "summary/history.png"} <= artifacts
    space = {a.path for a in searched["client"].list_artifacts(result.parent_run_id, "space")}
    assert "space/pruning.yaml" in space


def test_each_trial_runs_with_exactly_what_optuna_sampled(searched_either_path):
    searched = searched_either_path
    study_trials = {t.number: t for t in searched["study"].trials}
    for row in searched["result"].rows:
        sampled = study_trials[row.number].params
        assert row.params == sampled
        run = searched["client"].get_run(row.run_id)
        logged = {k.removeprefix("sampled."): v for k, v in run.data.params.items()}
        for name, value in sampled.items():
            assert logged[name] == str(value)
        # ... and the job's own config carries the values (what the trial trained with).
        trees = sampled["trees"].split("+")
        assert yaml.safe_load(run.data.params["method.trees"]) == trees
        depths = [sampled[f"depth.{tree}"] for tree in trees]
        assert yaml.safe_load(run.data.params["method.depths"]) == depths
        assert float(run.data.params["evaluation.eps"]) == sampled["evaluation.eps"]
        assert math.isclose(float(run.data.params["optim.lr"]), sampled["optim.lr"])


def test_asha_prunes_the_trial_that_falls_behind_at_the_first_rung(searched_either_path):
    searched = searched_either_path
    rows = sorted(searched["result"].rows, key=lambda row: row.number)
    assert [row.params for row in rows] == PRUNING_TRIALS  # as enqueued, in order
    assert [row.status for row in rows] == ["finished", "finished", "pruned"]
    assert [row.epochs for row in rows] == [2, 2, 1]
    states = {t.number: t.state.name for t in searched["study"].trials}
    # Pruned in the study, not COMPLETE with its one-epoch value.
    assert states == {0: "COMPLETE", 1: "COMPLETE", 2: "PRUNED"}
    pruned = searched["study"].trials[2]
    # Its learning curve is kept by epoch; Optuna shows a pruned trial's last intermediate value
    # as its value, and TPE treats PRUNED trials apart from COMPLETE ones.
    assert set(pruned.intermediate_values) == {1}
    assert pruned.values == [pruned.intermediate_values[1]]
    run = searched["client"].get_run(rows[2].run_id)
    assert run.info.status == "FINISHED"  # not FAILED
    assert run.data.tags[tracking.STATUS_TAG] == "pruned"
    assert tracking.ERROR_TAG not in run.data.tags
    finished = searched["client"].get_run(rows[1].run_id)
    assert finished.data.tags[tracking.STATUS_TAG] == "finished"
    assert any("pruned by ASHA after epoch 1" in line for line in searched["lines"])


def test_the_best_trial_and_the_summary_files(searched_either_path):
    searched = searched_either_path
    result = searched["result"]
    (best,) = result.best
    assert best.number == 1 and best.status == "finished"  # the only small-eps trial
    frame = pd.read_parquet(result.artifacts["parquet"])
    assert list(frame["trial"]) == [0, 1, 2]
    assert list(frame["status"]) == ["finished", "finished", "pruned"]
    assert list(frame["param.evaluation.eps"]) == [str(LARGE_EPS), str(SMALL_EPS), str(LARGE_EPS)]
    csv = pd.read_csv(result.artifacts["csv"])
    assert list(csv["mlflow_run_id"]) == list(frame["mlflow_run_id"])
    assert math.isclose(frame["robust_leaf"][1], best.metrics["robust_leaf"])
    assert result.artifacts["history"].stat().st_size > 0
    assert result.artifacts["importances"].stat().st_size > 0
    # The parent run's best metric is the best finished trial's.
    parent = searched["client"].get_run(result.parent_run_id)
    assert math.isclose(parent.data.metrics["best_robust_leaf"], best.metrics["robust_leaf"])
    assert parent.data.metrics["trials_pruned"] == 1


def test_pruned_trials_keep_no_more_checkpoints_than_configured(searched_either_path):
    searched = searched_either_path
    result = searched["result"]
    pruned = next(row for row in result.rows if row.status == "pruned")
    root = Path(result.artifacts["csv"]).parents[1] / "jobs"
    job = next(root.glob(f"*-trial-{pruned.number:03d}"))
    assert 1 <= len([p for p in job.glob("checkpoint_*") if p.is_dir()]) <= 2


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("trial_path", sorted(TRIAL_PATHS))
def test_a_killed_search_resumes_without_rerunning_or_duplicating(
    trial_path, tmp_path, ray_local, capsys, monkeypatch
):
    # The default stores (./mlflow.db, ./ray_results) of the directory the search runs in,
    # although trials run in Ray workers with other working directories.
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    space = {"optim.lr": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True}}
    budget = {"trials": 3, "concurrency": 1, "scheduler": "none", "seed": 0}
    path = space_file(
        tmp_path, "killed", space, budget, stores=False, overrides=TRIAL_PATHS[trial_path]
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"

    def finished_trials() -> int:
        # The driver's own progress lines; reading its MLflow database while the driver creates
        # it would race the schema creation.
        log_text = (tmp_path / "driver.log").read_text()
        return log_text.count(" finished: ")

    def second_trial_started() -> bool:
        return "trial 1 started" in (tmp_path / "driver.log").read_text()

    log = (tmp_path / "driver.log").open("w")
    driver = subprocess.Popen(
        [sys.executable, "-m", "raysearch.cli", "launch", str(path), "--name", "killed"],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        _wait_for(lambda: finished_trials() >= 1, 240, "the first trial to finish")
        _wait_for(second_trial_started, 120, "the second trial to start")
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=60)
    client = tracking.client(uri)
    experiment = client.get_experiment_by_name("raysearch").experiment_id
    before = {r.info.run_id: r for r in client.search_runs([experiment])}
    done = [r for r in before.values() if r.data.tags.get(tracking.STATUS_TAG) == "finished"]
    assert len(done) == 1
    first_end = done[0].info.end_time

    capsys.readouterr()
    assert main(["launch", str(path), "--resume", "--json"]) == 0  # finds "killed" itself
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["search"] == "killed" and not result["interrupted"]
    assert [row["status"] for row in result["trials"]] == ["finished"] * 3
    assert len(result["best"]) == 1 and Path(result["artifacts"]["parquet"]).is_file()
    after = client.search_runs([experiment])
    parent = result["mlflow_run_id"]
    children = [r for r in after if r.data.tags.get(tracking.PARENT_TAG) == parent]
    assert len(children) == 3  # no duplicate run for the trial that was cut off
    assert len(list((tmp_path / "ray_results" / "searches" / "killed" / "jobs").iterdir())) == 3
    assert len([r for r in after if r.data.tags.get(tracking.KIND_TAG) == "search"]) == 1
    assert all(r.info.status == "FINISHED" for r in after)
    # The trial that had finished was not trained again: its run and epochs are untouched.
    again = client.get_run(done[0].info.run_id)
    assert again.info.end_time == first_end
    history = client.get_metric_history(again.info.run_id, "epoch")
    assert sorted(m.step for m in history) == [0, 1]
    first = done[0].data.tags["raysearch.optuna_trial"]
    assert f"trial {first} epoch" not in captured.err
    assert "resuming search killed" in captured.err
    study = optuna.load_study(study_name="killed", storage=result["study"]["storage"])
    assert sorted(t.state.name for t in study.trials).count("COMPLETE") == 3
    assert not [t for t in study.trials if t.state.name == "RUNNING"]


def test_each_trial_path_keeps_its_checkpoints_in_the_job_folder(searched, searched_worker_group):
    def checkpoints(searched) -> dict[int, list[str]]:
        root = Path(searched["result"].artifacts["csv"]).parents[1] / "jobs"
        return {
            row.number: sorted(
                p.name for p in next(root.glob(f"*-trial-{row.number:03d}")).glob("checkpoint_*")
            )
            for row in searched["result"].rows
        }

    # In process, the loop names them by epoch; on a worker group, Ray Train by time.
    in_process, group = checkpoints(searched), checkpoints(searched_worker_group)
    assert in_process[0] == ["checkpoint_epoch_000000", "checkpoint_epoch_000001"]
    assert all(names and not any("epoch" in n for n in names) for names in group.values())
    for run in (searched, searched_worker_group):
        finished = next(row for row in run["result"].rows if row.status == "finished")
        artifacts = run["client"].list_artifacts(finished.run_id, "checkpoint")
        assert "checkpoint/state.pt" in {a.path for a in artifacts}


def test_a_trial_killed_mid_job_restarts_from_its_last_checkpoint(tmp_path, ray_local):
    # The trial runs its worker in its own process: killing that process fails the trial, Tune
    # restarts it, and the job resumes after its last saved epoch, in the same MLflow run.
    from ray.util.state import list_actors

    space = {"optim.lr": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True}}
    budget = {"trials": 1, "concurrency": 1, "scheduler": "none", "seed": 0}
    path = space_file(tmp_path, "trialkill", space, budget, overrides=["optim.epochs=3"])
    jobs = tmp_path / "ray_results" / "searches" / "trialkill" / "jobs"
    killed: list[int] = []
    problems: list[BaseException] = []

    def kill_the_trial_after_its_first_checkpoint() -> None:
        try:
            _wait_for(lambda: any(jobs.glob("*/checkpoint_epoch_*")), 240, "a checkpoint")
            alive = [("class_name", "=", "ImplicitFunc"), ("state", "=", "ALIVE")]
            (actor,) = list_actors(filters=alive)  # this search's only trial
            os.kill(actor.pid, signal.SIGKILL)
            killed.append(actor.pid)
        except BaseException as error:  # reported by the test, not lost in this thread
            problems.append(error)

    killer = threading.Thread(target=kill_the_trial_after_its_first_checkpoint)
    killer.start()
    lines: list[str] = []
    result = launch(load_space(path), space_file=path, name="trialkill", out=lines.append)
    killer.join(timeout=60)
    assert not problems and len(killed) == 1
    (row,) = result.rows
    assert (row.status, row.epochs) == ("finished", 3)
    client = tracking.client(result.tracking_uri)
    run = client.get_run(row.run_id)
    assert run.info.status == "FINISHED"
    # Every epoch logged once; the last ones by the restarted trial, which began after epoch 0.
    history = client.get_metric_history(row.run_id, "epoch")
    assert sorted(m.step for m in history) == [0, 1, 2]
    starts = {m.step: m.value for m in client.get_metric_history(row.run_id, "start_epoch")}
    assert starts[0] == 0 and starts[2] >= 1
    assert any("restarting it from its last checkpoint" in line for line in lines)
    assert any("trial 0 restarted (failure 1)" in line for line in lines)
    children = client.search_runs(
        [run.info.experiment_id], f"tags.`{tracking.PARENT_TAG}` = '{result.parent_run_id}'"
    )
    assert len(children) == 1


def test_a_bad_space_fails_before_ray_with_one_line(tmp_path, capsys):
    path = space_file(
        tmp_path, "bad", {"optim.lr": {"type": "float", "low": 1e-3, "high": 1e-4}}, {}
    )
    assert main(["launch", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err.startswith("raysearch: error: `space.optim.lr.low` must be <= high")
    assert not (tmp_path / "ray_results").exists() and not (tmp_path / "mlflow.db").exists()


def test_trials_with_resume_and_an_existing_name_are_refused(tmp_path, capsys):
    path = space_file(tmp_path, "refused", {"optim.lr": {"type": "fixed", "value": 1e-3}}, {})
    assert main(["launch", str(path), "--resume", "--trials", "2"]) == 2
    assert "`--trials` must be left out with --resume" in capsys.readouterr().err
    assert main(["launch", str(path), "--resume"]) == 2
    assert "`--resume` must be used after a search of refused started" in capsys.readouterr().err
    (tmp_path / "ray_results" / "searches" / "taken").mkdir(parents=True)
    assert main(["launch", str(path), "--name", "taken"]) == 2
    assert "`--name` must be a new search name" in capsys.readouterr().err
    assert main(["launch", str(path), "--name", "bad name!"]) == 2
    assert "`--name` must be 1 to 64 characters" in capsys.readouterr().err


def test_inspect_lists_every_trial_of_the_search_with_its_metrics(searched, capsys):
    result = searched["result"]
    store = ["--tracking-uri", result.tracking_uri]
    capsys.readouterr()
    assert main(["inspect", "--search", result.name, "--json", *store]) == 0
    trials = {trial["trial"]: trial for trial in json.loads(capsys.readouterr().out)["trials"]}
    assert sorted(trials) == [0, 1, 2]
    for row in result.rows:
        shown = trials[row.number]
        assert shown["status"] == row.status and shown["run_id"] == row.run_id
        assert shown["params"]["evaluation.eps"] == str(row.params["evaluation.eps"])
        if row.status != "finished":
            # A pruned trial's workers may log one more epoch to MLflow before the stop reaches
            # them; the search's row holds the epoch ASHA judged.
            continue
        for metric in ("clean_leaf", "robust_leaf"):
            assert math.isclose(shown["metrics"][metric], row.metrics[metric])
    assert "worst_superclass" in trials[1]["metrics"]  # measured after the last epoch only
    assert main(["inspect", *store]) == 0
    listing = capsys.readouterr().out
    assert result.name in listing and result.parent_run_id in listing
