"""The per-epoch MLflow log the driver hands to the training loop."""

from __future__ import annotations

import pickle

from raysearch import tracking


def _run(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = tracking.client(uri)
    experiment = tracking.experiment_id(client, "raysearch")
    run, _ = tracking.get_or_create_job_run(client, experiment, "job")
    return uri, client, run.info.run_id


def test_each_epoch_is_logged_once_by_step_with_slashes_as_dots(tmp_path):
    uri, client, run_id = _run(tmp_path)
    log = tracking.EpochLog(uri, run_id)
    log(0, {"loss": 1.5, "clean/form/0": 0.25, "epoch": 0, "note": "text", "flag": True})
    log(0, {"loss": 9.0})  # a restarted worker group repeats the epoch: not written again
    log(1, {"loss": 0.5})
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "loss")] == [
        (0, 1.5),
        (1, 0.5),
    ]
    assert [m.value for m in client.get_metric_history(run_id, "clean.form.0")] == [0.25]
    assert sorted(m.step for m in client.get_metric_history(run_id, "epoch")) == [0, 1]
    assert client.get_metric_history(run_id, "note") == []
    assert client.get_metric_history(run_id, "flag") == []


def test_it_travels_to_a_worker_without_its_client(tmp_path):
    uri, client, run_id = _run(tmp_path)
    log = tracking.EpochLog(uri, run_id)
    log(0, {"loss": 1.0})  # opens a client here
    copy = pickle.loads(pickle.dumps(log))
    assert copy._client is None and (copy.tracking_uri, copy.run_id) == (uri, run_id)
    copy(1, {"loss": 2.0})
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == [0, 1]
