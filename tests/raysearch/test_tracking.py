"""The per-epoch MLflow log the driver hands to the training loop."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

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


def test_a_later_attempt_takes_the_run_over_and_the_earlier_one_stops(tmp_path):
    uri, client, run_id = _run(tmp_path)
    first = tracking.EpochLog(uri, run_id)
    first.begin()
    first(0, {"loss": 1.0, "start_epoch": 0})
    # Its node is presumed dead; the job restarts elsewhere from the checkpoint of epoch 0.
    later = pickle.loads(pickle.dumps(tracking.EpochLog(uri, run_id)))
    later.begin()
    with pytest.raises(tracking.AttemptSuperseded, match="stops before logging epoch 1"):
        first(1, {"loss": 9.0, "start_epoch": 0})
    later(1, {"loss": 0.5, "start_epoch": 1})
    later(2, {"loss": 0.25, "start_epoch": 1})
    history = client.get_metric_history(run_id, "start_epoch")
    assert sorted((m.step, m.value) for m in history) == [(0, 0), (1, 1), (2, 1)]
    claim = client.get_run(run_id).data.tags[tracking.ATTEMPT_TAG]
    assert claim == later._attempt != first._attempt


def test_each_start_claims_anew_and_skips_what_the_run_holds(tmp_path):
    uri, client, run_id = _run(tmp_path)
    log = tracking.EpochLog(uri, run_id)
    log.begin()
    log(0, {"loss": 1.0})
    claim = client.get_run(run_id).data.tags[tracking.ATTEMPT_TAG]
    log.begin()  # a restarted worker group in the same process
    assert client.get_run(run_id).data.tags[tracking.ATTEMPT_TAG] != claim
    log(0, {"loss": 2.0})
    log(1, {"loss": 3.0})
    assert [m.value for m in client.get_metric_history(run_id, "loss")] == [1.0, 3.0]


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sqlite:///mlflow.db", Path("mlflow.db")),
        ("sqlite:////abs/dir/m.db", Path("/abs/dir/m.db")),
        ("sqlite+pysqlite:///rel/m.db?timeout=5", Path("rel/m.db")),
        ("SQLite:///m.db", Path("m.db")),
        ("http://127.0.0.1:5000", None),
        ("postgresql://u@h/db", None),
        ("databricks", None),
    ],
)
def test_the_one_parser_of_sqlite_uris(uri, expected):
    assert tracking.sqlite_file(uri) == expected


def test_artifacts_of_a_sqlite_store_live_beside_it(tmp_path):
    root = tracking.artifact_root(f"sqlite:///{tmp_path / 'm.db'}")
    assert root == (tmp_path / tracking.ARTIFACT_FOLDER).as_uri()
    assert tracking.artifact_root("http://127.0.0.1:5000") is None


def _search_with_trials(client, experiment, name, trials):
    parent = client.create_run(experiment, tags={tracking.SEARCH_TAG: name})
    children = []
    for _ in range(trials):
        run = client.create_run(experiment, tags={tracking.PARENT_TAG: parent.info.run_id})
        children.append(run.info.run_id)
    return parent, children


def test_every_page_of_child_runs_is_read(tmp_path, monkeypatch):
    uri, client, _ = _run(tmp_path)
    experiment = tracking.experiment_id(client, "raysearch")
    parent, children = _search_with_trials(client, experiment, "s", 5)
    monkeypatch.setattr(tracking, "_PAGE", 2)  # five trials come in three pages
    found = tracking.child_runs(client, experiment, parent.info.run_id)
    assert sorted(run.info.run_id for run in found) == sorted(children)
    client.set_terminated(children[0], status="FINISHED")
    running = tracking.child_runs(client, experiment, parent.info.run_id, running_only=True)
    assert sorted(run.info.run_id for run in running) == sorted(children[1:])


def test_a_search_is_found_by_run_id_or_by_name_the_newest_first(tmp_path):
    uri, client, job_run_id = _run(tmp_path)
    experiment = tracking.experiment_id(client, "raysearch")
    first, _ = _search_with_trials(client, experiment, "sweep", 0)
    newer, _ = _search_with_trials(client, experiment, "sweep", 0)
    assert tracking.find_search_run(client, experiment, first.info.run_id).info.run_id == (
        first.info.run_id
    )
    assert tracking.find_search_run(client, experiment, "sweep").info.run_id == newer.info.run_id
    job = tracking.find_search_run(client, experiment, job_run_id)  # a run, but no search's
    assert job is not None and not tracking.is_search_run(job)
    assert tracking.find_search_run(client, experiment, "0" * 32) is None
    assert tracking.find_search_run(client, experiment, "nope") is None
    assert tracking.find_search_run(client, experiment, "x' or '1'='1") is None  # never queried


class _DownStore:
    """A client of a tracking server that does not answer (what MLflow raises after its
    retries)."""

    def __init__(self, answers_after: int = 10**9):
        self.calls, self.answers_after = 0, answers_after
        self.tags: dict[str, dict[str, str]] = {}
        self.statuses: dict[str, str] = {}

    def _call(self):
        from mlflow.exceptions import MlflowException

        self.calls += 1
        if self.calls <= self.answers_after:
            raise MlflowException("API request to http://127.0.0.1:1/api failed: refused")

    def get_metric_history(self, run_id, key):
        self._call()
        return []

    def log_batch(self, run_id, metrics=()):
        self._call()

    def search_runs(self, experiments, filter_string="", max_results=0):
        self._call()
        run = type("Run", (), {})()
        run.info = type("Info", (), {"run_id": "r1"})()
        return [run]

    def set_tag(self, run_id, key, value):
        self._call()
        self.tags.setdefault(run_id, {})[key] = value

    def set_terminated(self, run_id, status):
        self._call()
        self.statuses[run_id] = status


def test_a_tracking_server_that_stays_down_fails_the_epoch_log_with_its_address():
    log = tracking.EpochLog("http://127.0.0.1:1", "abc")
    log._client = _DownStore()
    with pytest.raises(tracking.TrackingUnavailable) as caught:
        log(3, {"loss": 1.0})
    message = str(caught.value)
    assert "http://127.0.0.1:1 did not answer" in message and "epochs of run abc" in message
    log._client, log._logged = _DownStore(), {0, 1, 2}
    with pytest.raises(tracking.TrackingUnavailable, match="log epoch 3 of run abc"):
        log(3, {"loss": 1.0})


@pytest.mark.parametrize(
    ("before", "node", "expected"),
    [
        (None, "a", "a"),
        ("a", "a", "a"),  # restarted on the same node: listed once
        ("a", "b", "a,b"),
        ("a,b", "a", "a,b,a"),  # back on the first node after the second died
    ],
)
def test_node_tags_list_every_node_a_trial_ran_on_in_order(before, node, expected):
    run = None
    if before is not None:
        run = type("Run", (), {})()
        run.data = type("Data", (), {"tags": {tracking.NODES_TAG: before}})()
    assert tracking.node_tags(run, node) == {tracking.NODE_TAG: node, tracking.NODES_TAG: expected}


def test_a_run_the_store_cannot_close_now_is_closed_when_it_answers_again(tmp_path):
    from raysearch.search_callbacks import TrialRuns
    from raysearch.search_state import NUMBER_KEY

    callbacks = TrialRuns("http://127.0.0.1:1", "1", "s", tmp_path, keep=1)
    store = _DownStore(answers_after=1)  # the first call fails, every later one works
    callbacks._client = store
    trial = type("Trial", (), {"config": {NUMBER_KEY: 0}, "last_result": {}})()
    trial.get_error = lambda: RuntimeError("boom")
    callbacks.on_trial_error(0, [trial], trial)
    assert callbacks.pending and not store.statuses  # kept, not lost, and the search goes on
    callbacks.on_experiment_end([trial])
    assert not callbacks.pending
    assert store.statuses == {"r1": "FAILED"}
    assert store.tags["r1"][tracking.STATUS_TAG] == "failed"
    assert "boom" in store.tags["r1"][tracking.ERROR_TAG]


def test_a_store_gone_for_good_ends_the_command_with_one_line(monkeypatch, capsys, tmp_path):
    from raysearch import cli
    from raysearch.commands import launch

    def store_down(args):
        raise tracking.unavailable("http://127.0.0.1:1", "close search s", RuntimeError("refused"))

    monkeypatch.setattr(launch, "run", store_down)
    assert cli.main(["launch", str(tmp_path / "space.yaml")]) == 1
    error = capsys.readouterr().err
    assert error.startswith("raysearch: error: the MLflow tracking store http://127.0.0.1:1")
    assert error.count("\n") == 1 and "Traceback" not in error
