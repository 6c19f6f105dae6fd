"""SIGTERM stops a job or a search the way Ctrl-C does: its MLflow runs end KILLED with the reason
"stopped by SIGTERM" instead of staying RUNNING, and the command exits non-zero.

The guard is tested on its own (signals sent to this process), and the search's closing steps on
a small SQLite store, without starting Ray.
"""

from __future__ import annotations

import shutil
import signal
import threading
from types import SimpleNamespace

import pytest

from raysearch import cli, stopping, tracking


def _send_sigterm() -> None:
    signal.raise_signal(signal.SIGTERM)


def test_an_armed_guard_raises_sigterm_as_an_interrupt_and_restores_the_handler():
    previous = signal.getsignal(signal.SIGTERM)
    with stopping.SigtermGuard() as guard:
        assert signal.getsignal(signal.SIGTERM) is previous  # nothing before arm()
        guard.arm()
        with pytest.raises(KeyboardInterrupt) as caught:  # the Ctrl-C path handles it
            _send_sigterm()
        assert isinstance(caught.value, stopping.Stopped)
        assert str(caught.value) == stopping.STOPPED_BY_SIGTERM == "stopped by SIGTERM"
        assert guard.received and guard.reason == "stopped by SIGTERM"
        _send_sigterm()  # a second one, during the clean-up, is only noted
    assert signal.getsignal(signal.SIGTERM) is previous


def test_a_deferred_sigterm_lets_the_clean_up_finish_then_stops():
    cleaned_up = False
    with pytest.raises(stopping.Stopped):
        with stopping.SigtermGuard() as guard:
            guard.arm()
            guard.defer()
            _send_sigterm()  # no exception: noted for the caller
            assert guard.received and guard.reason == stopping.STOPPED_BY_SIGTERM
            cleaned_up = True
    assert cleaned_up  # the block ran to its end; the stop came when it was left


def test_without_a_sigterm_there_is_no_reason():
    with stopping.SigtermGuard() as guard:
        guard.arm()
    assert not guard.received and guard.reason is None


def test_outside_the_main_thread_the_guard_installs_nothing():
    previous = signal.getsignal(signal.SIGTERM)
    seen = []

    def trial_driver():  # Ray Tune runs a trial's function in a thread
        with stopping.SigtermGuard() as guard:
            guard.arm()
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=trial_driver)
    thread.start()
    thread.join()
    assert seen == [previous]


def test_the_cli_exits_non_zero_when_stopped(monkeypatch, capsys):
    def stopped(args):
        raise stopping.Stopped(stopping.STOPPED_BY_SIGTERM)

    from raysearch.commands import inspect

    monkeypatch.setattr(inspect, "run", stopped)
    assert cli.main(["inspect"]) == 143  # as a shell reports a process ended by SIGTERM
    assert capsys.readouterr().err == "raysearch: stopped by SIGTERM\n"

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(inspect, "run", interrupted)
    assert cli.main(["inspect"]) == 130
    assert capsys.readouterr().err == "raysearch: interrupted\n"


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory):
    """An MLflow store with the experiment ``raysearch`` (made once: tests use copies)."""
    database = tmp_path_factory.mktemp("empty-store") / "mlflow.db"
    tracking.experiment_id(tracking.client(f"sqlite:///{database}"), "raysearch")
    return database


@pytest.fixture()
def store(empty_store, tmp_path):
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = tracking.client(uri)
    return client, tracking.experiment_id(client, "raysearch"), uri


def test_a_search_stopped_by_sigterm_ends_its_open_runs_and_its_parent_killed(store, tmp_path):
    from raysearch import search_report, search_runs

    client, experiment, uri = store
    parent, _ = tracking.get_or_create_search_run(client, experiment, "stopped-search")
    parent_id = parent.info.run_id
    tags = {tracking.PARENT_TAG: parent_id}
    running = client.create_run(experiment, tags=tags).info.run_id
    finished = client.create_run(experiment, tags=tags).info.run_id
    client.set_terminated(finished, status="FINISHED")

    reason = stopping.STOPPED_BY_SIGTERM
    search_runs.close_orphans(None, client, experiment, parent_id, True, stop_reason=reason)
    report = tmp_path / "report"
    report.mkdir()
    (report / "summary.csv").write_text("trial\n")
    result = search_report.SearchResult(
        name="stopped-search",
        parent_run_id=parent_id,
        tracking_uri=uri,
        experiment="raysearch",
        study_name="stopped-search",
        optuna_url="",
        rows=[],
        best=[],
        interrupted=True,
        stop_reason=reason,
    )
    space = SimpleNamespace(metrics=["robust_leaf"])
    search_runs.finish_parent(client, parent_id, result, space, SimpleNamespace(report=report))

    for run_id in (running, parent_id):
        run = client.get_run(run_id)
        assert run.info.status == "KILLED"
        assert run.data.tags[tracking.ERROR_TAG] == "stopped by SIGTERM"
    assert client.get_run(finished).info.status == "FINISHED"  # ended before: left alone
    assert tracking.ERROR_TAG not in client.get_run(finished).data.tags


def test_a_search_interrupted_by_ctrl_c_keeps_its_resume_hint(store, tmp_path):
    from raysearch import search_runs

    client, experiment, uri = store
    parent, _ = tracking.get_or_create_search_run(client, experiment, "ctrl-c")
    running = client.create_run(experiment, tags={tracking.PARENT_TAG: parent.info.run_id})
    search_runs.close_orphans(None, client, experiment, parent.info.run_id, True)
    error = client.get_run(running.info.run_id).data.tags[tracking.ERROR_TAG]
    assert error == "search interrupted; continue with raysearch launch --resume"
