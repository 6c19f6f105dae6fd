"""Searches on a real multi-node Ray cluster with a real MLflow tracking server, all on this
machine and 127.0.0.1 (:mod:`tests.cluster`): trials spread over nodes, promote and inspect
through the server, Ray Jobs, a worker node killed mid-trial, the server stopped mid-search, and
the launching process killed and resumed.

The head node has no CPUs and 8 ``train_driver`` slots; each worker node has 1 CPU, so every
one-worker trial trains on a worker node, one per node. ``pytest -m cluster`` runs these alone.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from raysearch import tracking
from raysearch.cli import main
from tests.cluster import (
    TrackingServer,
    left_behind,
    listening_addresses,
    start_ray_cluster,
    wait_for,
)
from tests.raysearch.search_fixtures import space_file

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}
LR = {"optim.lr": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True}}


def _short_folder() -> Path:
    # Ray keeps its sockets under the folder: a socket path has at most 107 characters.
    return Path(tempfile.mkdtemp(prefix="rs-", dir="/tmp"))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    started = TrackingServer(tmp_path_factory.mktemp("mlflow-server")).start()
    yield started
    started.stop()
    assert not left_behind(started.process.pid), "the MLflow server left processes"


def _cluster(base_model, **options):
    folder = _short_folder()
    started = start_ray_cluster(folder, **options)
    try:
        yield started
    finally:
        started.stop()
        left = left_behind(started.process.pid)
        shutil.rmtree(folder, ignore_errors=True)
        assert not left, f"the Ray cluster left processes: {left}"


@pytest.fixture(scope="module")
def cluster(base_model):
    """A head and two worker nodes (the base model is pretrained before the nodes need it)."""
    yield from _cluster(base_model)


@pytest.fixture(scope="module")
def fragile_cluster(base_model):
    """Another cluster, for the tests that break it: MLflow clients on its nodes give up on a
    tracking server after two quick retries (~3 s) instead of MLflow's ~4 minutes."""
    retries = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
    yield from _cluster(base_model, workers=3, environment=retries)  # two will fail


def _space(tmp_path: Path, name: str, server, budget: dict, epochs: int = 2) -> Path:
    return space_file(
        tmp_path,
        name,
        LR,
        {"scheduler": "none", "seed": 0, **budget},
        overrides=[f"mlflow.tracking_uri={server.uri}", f"optim.epochs={epochs}"],
    )


def _launch_command(space: Path, *options: str) -> list[str]:
    return [sys.executable, "-m", "raysearch.cli", "launch", str(space), *options]


def _launch(cluster, space: Path, *options: str, timeout: float = 400) -> dict:
    """Run ``raysearch launch`` on the cluster to the end; its JSON result."""
    done = subprocess.run(
        _launch_command(space, "--address", cluster.gcs, "--json", *options),
        capture_output=True,
        text=True,
        cwd=space.parent,
        env=cluster.environment,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout)


def _start_launch(cluster, space: Path, log: Path, *options: str) -> subprocess.Popen:
    """``raysearch launch`` on the cluster in the background: its standard error (the progress
    lines) into ``log``, its standard output (the JSON result with ``--json``) beside it."""
    return subprocess.Popen(
        _launch_command(space, "--address", cluster.gcs, *options),
        stdout=log.with_suffix(".json").open("w"),
        stderr=log.open("w"),
        cwd=space.parent,
        env=cluster.environment,
        start_new_session=True,
    )


def _children(client, result: dict) -> list:
    experiment = client.get_experiment_by_name(result["experiment"]).experiment_id
    return tracking.child_runs(client, experiment, result["mlflow_run_id"])


def _epochs(client, run_id: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, "epoch"))


def _trial_run(client, experiment: str, search: str, number: int = 0):
    """The run of trial ``number`` of ``search`` in the server's store, once it exists."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    return tracking.find_job_run(client, found.experiment_id, f"{search}-trial-{number:03d}")


def _logged_epochs(client, run) -> int:
    return len(client.get_metric_history(run.info.run_id, "epoch")) if run is not None else 0


# -- a search across nodes, with the tracking server ---------------------------------------------


def test_a_search_spreads_its_trials_over_the_nodes_and_logs_them_to_the_server(
    cluster, server, tmp_path, capsys
):
    space = _space(tmp_path, "spread", server, {"trials": 2, "concurrency": 2})
    result = _launch(cluster, space, "--name", "spread")
    assert [row["status"] for row in result["trials"]] == ["finished", "finished"]
    assert result["tracking_uri"] == server.uri

    client = tracking.client(server.uri)
    children = _children(client, result)
    assert len(children) == 2
    nodes = {run.data.tags[tracking.NODE_TAG] for run in children}
    workers = {node["id"] for node in cluster.worker_nodes}
    assert nodes == workers  # one trial on each worker node (each has one CPU)
    for run in children:
        assert run.info.status == "FINISHED"
        assert run.data.tags[tracking.NODES_TAG] == run.data.tags[tracking.NODE_TAG]
        assert _epochs(client, run.info.run_id) == [0, 1]
    parent = client.get_run(result["mlflow_run_id"])
    assert parent.info.status == "FINISHED"
    # Artifacts go through the server into its own artifact store.
    summary = {a.path for a in client.list_artifacts(parent.info.run_id, "summary")}
    assert "summary/summary.csv" in summary

    capsys.readouterr()
    assert main(["inspect", "--tracking-uri", server.uri, "--search", "spread", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert sorted(row["run_id"] for row in listed["trials"]) == sorted(
        run.info.run_id for run in children
    )
    promote = ["promote", "--tracking-uri", server.uri, "--search", "spread"]
    assert main([*promote, "--metric", "robust_leaf", "--name", "cluster-model", "--json"]) == 0
    promoted = json.loads(capsys.readouterr().out)
    assert promoted["run_id"] in {run.info.run_id for run in children}
    version = client.get_model_version_by_alias("cluster-model", "champion")
    assert version.run_id == promoted["run_id"]

    assert listening_addresses(cluster.process.pid) <= LOOPBACK
    assert listening_addresses(server.process.pid) == {"127.0.0.1"}


def test_ray_job_submit_runs_a_search_and_its_logs_show_the_progress_lines(
    cluster, server, tmp_path
):
    space = _space(tmp_path, "jobs", server, {"trials": 1, "concurrency": 1})
    ray = str(Path(sys.executable).with_name("ray"))
    submission = f"raysearch-jobs-{os.getpid()}"
    submit = [
        ray,
        "job",
        "submit",
        "--address",
        cluster.dashboard_url,
        "--submission-id",
        submission,
        "--",
        *_launch_command(space, "--name", "jobs"),
    ]
    deadline = time.monotonic() + 120
    while True:
        submitted = subprocess.run(
            submit, capture_output=True, text=True, env=cluster.environment, timeout=400
        )
        # The head's job agent registers some seconds after the node; Ray says to try again.
        if "No available agent" not in submitted.stderr or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert submitted.returncode == 0, submitted.stdout[-4000:] + submitted.stderr[-2000:]
    logs = subprocess.run(
        [ray, "job", "logs", submission, "--address", cluster.dashboard_url],
        capture_output=True,
        text=True,
        env=cluster.environment,
        timeout=60,
    )
    assert logs.returncode == 0, logs.stderr[-2000:]
    assert "starting search jobs: 1 trials" in logs.stdout
    assert "trial 0 finished" in logs.stdout
    assert "best trial: 0" in logs.stdout
    # The job joined the cluster (RAY_ADDRESS), it did not start a Ray of its own.
    client = tracking.client(server.uri)
    run = _trial_run(client, "raysearch", "jobs")
    assert run.data.tags[tracking.NODE_TAG] in {node["id"] for node in cluster.worker_nodes}


# -- failures ------------------------------------------------------------------------------------


def test_a_short_tracking_server_outage_does_not_fail_the_trial(cluster, server, tmp_path):
    space = _space(tmp_path, "outage", server, {"trials": 1, "concurrency": 1}, epochs=3)
    log = tmp_path / "driver.log"
    driver = _start_launch(cluster, space, log, "--name", "outage", "--json")
    client = tracking.client(server.uri)
    try:
        wait_for(
            lambda: _logged_epochs(client, _trial_run(client, "raysearch", "outage")) >= 1,
            300,
            "the first epoch",
            log,
        )
        server.stop()
        time.sleep(8)  # MLflow's own retries (with backoff) wait this out
        server.start()
        assert driver.wait(timeout=400) == 0, log.read_text()[-4000:]
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    result = json.loads(log.with_suffix(".json").read_text())
    assert [row["status"] for row in result["trials"]] == ["finished"]
    (run,) = _children(client, result)
    assert run.info.status == "FINISHED"
    assert _epochs(client, run.info.run_id) == [0, 1, 2]


def test_a_killed_driver_resumes_on_the_cluster_without_duplicates(cluster, server, tmp_path):
    space = _space(tmp_path, "driverkill", server, {"trials": 2, "concurrency": 1})
    log = tmp_path / "driver.log"
    driver = _start_launch(cluster, space, log, "--name", "driverkill", "--json")
    try:
        wait_for(lambda: "trial 1 started" in log.read_text(), 400, "the second trial", log)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the launching process, as a lost terminal
        driver.wait(timeout=60)
    client = tracking.client(server.uri)
    first = _trial_run(client, "raysearch", "driverkill", 0)
    assert first.data.tags[tracking.STATUS_TAG] == "finished"
    first_end = first.info.end_time

    result = _launch(cluster, space, "--resume", "--name", "driverkill")
    assert not result["interrupted"]
    assert [row["status"] for row in result["trials"]] == ["finished", "finished"]
    children = _children(client, result)
    assert len(children) == 2  # the trial cut off kept its run
    assert all(run.info.status == "FINISHED" for run in children)
    for run in children:
        assert _epochs(client, run.info.run_id) == [0, 1]
    assert client.get_run(first.info.run_id).info.end_time == first_end  # not trained again
    experiment = client.get_experiment_by_name("raysearch").experiment_id
    parents = tracking.all_runs(client, [experiment], "tags.`raysearch.search` = 'driverkill'")
    assert len(parents) == 1


@pytest.mark.parametrize("failure", ["dies", "stalls"])
def test_a_trial_on_a_failed_node_resumes_on_another_from_its_checkpoint(
    fragile_cluster, server, tmp_path, failure
):
    """A node dies (every process of it killed), or stalls (every process of it stopped) until
    the trial has restarted on another node and then runs on: the stalled attempt must not log
    or checkpoint another epoch of the run the restarted one continues."""
    epochs, name = 6, f"node{failure}"
    space = _space(tmp_path, name, server, {"trials": 1, "concurrency": 1}, epochs=epochs)
    log = tmp_path / "driver.log"
    jobs = tmp_path / "ray_results" / "searches" / name / "jobs"
    driver = _start_launch(fragile_cluster, space, log, "--name", name, "--json")
    client = tracking.client(server.uri)
    try:
        # The node is known from the run's tag before the first epoch ends, so the failure
        # follows the first checkpoint (in the storage every node shares) at once, mid-job.
        wait_for(lambda: _trial_run(client, "raysearch", name), 300, "the trial's run", log)
        first_node = _trial_run(client, "raysearch", name).data.tags[tracking.NODE_TAG]
        wait_for(lambda: any(jobs.glob("*/checkpoint_epoch_*")), 300, "a checkpoint", log, 0.02)
        frozen = fragile_cluster.freeze_node(first_node)
        checkpointed = sorted(path.name for path in jobs.glob("*/checkpoint_epoch_*"))
        assert len(checkpointed) < epochs, f"the job ended before the failure: {checkpointed}"
        if failure == "dies":
            fragile_cluster.kill_node(first_node)
        else:
            claim = _trial_run(client, "raysearch", name).data.tags[tracking.ATTEMPT_TAG]
            wait_for(
                lambda: (
                    _trial_run(client, "raysearch", name).data.tags[tracking.ATTEMPT_TAG] != claim
                ),
                300,
                "the restarted attempt",
                log,
            )
            fragile_cluster.thaw(frozen)
        assert driver.wait(timeout=400) == 0, log.read_text()[-4000:]
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    output = log.read_text()
    result = json.loads(log.with_suffix(".json").read_text())
    assert [row["status"] for row in result["trials"]] == ["finished"]  # counted once
    (run,) = _children(client, result)
    assert run.info.status == "FINISHED"
    nodes = run.data.tags[tracking.NODES_TAG].split(",")
    assert nodes[0] == first_node and len(nodes) == 2 and nodes[1] != first_node
    assert _epochs(client, run.info.run_id) == list(range(epochs))  # no epoch logged twice
    starts = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "start_epoch")}
    # Every epoch after the last checkpoint of the failed node was logged by the restarted
    # attempt, which resumed from that checkpoint, not from scratch.
    resumed = int(checkpointed[-1].rpartition("_")[2]) + 1
    assert starts[0] == 0 and all(starts[e] == resumed for e in range(resumed, epochs)), starts
    assert "restarting it from its last checkpoint" in output


def test_a_long_tracking_server_outage_fails_the_trial_with_the_reason(
    fragile_cluster, server, tmp_path
):
    space = _space(tmp_path, "longoutage", server, {"trials": 1, "concurrency": 1}, epochs=3)
    log = tmp_path / "driver.log"
    driver = _start_launch(fragile_cluster, space, log, "--name", "longoutage", "--json")
    client = tracking.client(server.uri)
    try:
        wait_for(
            lambda: _logged_epochs(client, _trial_run(client, "raysearch", "longoutage")) >= 1,
            300,
            "the first epoch",
            log,
        )
        server.stop()
        # The trial and its restarts give up on the server after their few retries; the
        # driver's own client keeps MLflow's default patience and waits for the server.
        wait_for(lambda: "trial 0 failed:" in log.read_text(), 300, "the trial to fail", log)
        server.start()
        code = driver.wait(timeout=300)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        if not server.answers():
            server.start()
    output = log.read_text()
    assert code == 1, output[-4000:]  # every trial failed
    result = json.loads(log.with_suffix(".json").read_text())
    (row,) = result["trials"]
    assert row["status"] == "failed"
    assert "did not answer" in row["error"] and server.uri in row["error"]
    (run,) = _children(client, result)
    assert run.info.status == "FAILED"
    assert "did not answer" in run.data.tags[tracking.ERROR_TAG]
    logged = _epochs(client, run.info.run_id)  # what was logged stays, nothing twice
    assert logged == list(range(len(logged))) and 1 <= len(logged) < 3
