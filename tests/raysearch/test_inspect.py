"""`raysearch inspect` and `raysearch ui` on a synthetic MLflow store (no Ray, no training).

The store holds what :mod:`raysearch.search` writes: a search's parent run and its trials'
child runs (finished, pruned, failed), plus a child run from an older version of the tool (no
status tag, no metrics, still RUNNING), an older search with nothing but its tag, and a plain
training job (kind ``train``) that is not a search.
"""

from __future__ import annotations

import argparse
import csv
import json
import math

import pytest

from raysearch import cli, tracking
from raysearch import inspection as inspect_lib
from raysearch.commands import ui as ui_command
from raysearch.commands.models import resolve_tracking_uri

T0 = 1_700_000_000_000  # ms since the epoch: the demo search's start
SEARCH = "demo-20240101-120000"


def _log_epochs(client, run_id: str, epochs: list[dict[str, float]]) -> None:
    from mlflow.entities import Metric

    for epoch, values in enumerate(epochs):
        metrics = [Metric(k, v, T0 + epoch, epoch) for k, v in values.items()]
        metrics.append(Metric("epochs_completed", epoch + 1, T0 + epoch, epoch))
        client.log_batch(run_id, metrics=metrics)


def _trial(client, experiment, parent_id, number, *, status, lr, trees, epochs, error=None):
    run = client.create_run(
        experiment,
        start_time=T0 + 1000 * number,
        run_name=f"{SEARCH}-trial-{number:03d}",
        tags={
            tracking.PARENT_TAG: parent_id,
            tracking.KIND_TAG: "train",
            tracking.JOB_TAG: f"{SEARCH}-trial-{number:03d}",
            "raysearch.optuna_trial": str(number),
        },
    )
    run_id = run.info.run_id
    tracking.log_params(
        client,
        run_id,
        {
            "optim.lr": lr,
            "optim.epochs": 2,
            "method.name": "hrz-forest",
            "sampled.optim.lr": lr,
            "sampled.trees": trees,
        },
    )
    _log_epochs(client, run_id, epochs)
    client.set_tag(run_id, tracking.STATUS_TAG, status)
    if error is None:
        client.set_terminated(run_id, status="FINISHED", end_time=T0 + 1000 * number + 90_000)
    else:
        client.set_tag(run_id, tracking.ERROR_TAG, error)
        client.set_terminated(run_id, status="FAILED", end_time=T0 + 1000 * number + 5_000)
    return run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A store with two searches, four trials (one written by an older version), a train job."""
    folder = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = tracking.client(uri)
    experiment = tracking.experiment_id(client, "raysearch")

    old = client.create_run(
        experiment, start_time=T0 - 86_400_000, tags={tracking.SEARCH_TAG: "old"}
    )
    client.set_terminated(old.info.run_id, status="KILLED", end_time=T0 - 86_000_000)

    parent = client.create_run(
        experiment,
        start_time=T0,
        run_name=SEARCH,
        tags={tracking.SEARCH_TAG: SEARCH, tracking.KIND_TAG: "search"},
    )
    parent_id = parent.info.run_id
    epoch = {"clean_leaf": 0.70, "robust_leaf": 0.40, "loss": 1.5, "clean.form.1": 0.8}
    last = {"clean_leaf": 0.80, "robust_leaf": 0.55, "loss": 1.2, "clean.form.1": 0.9}
    final = {**last, "transfer": 0.33, "worst_superclass": 0.25}
    specs = [
        dict(status="finished", lr=3e-4, trees="form", epochs=[epoch, final]),
        dict(
            status="pruned",
            lr=2e-3,
            trees="form+corners",
            epochs=[{"clean_leaf": 0.60, "robust_leaf": 0.30, "loss": 2.0}],
        ),
        dict(
            status="failed",
            lr=1e-4,
            trees="corners",
            epochs=[{"loss": math.nan}],
            error="RuntimeError: CUDA out of memory",
        ),
    ]
    ids = [_trial(client, experiment, parent_id, n, **spec) for n, spec in enumerate(specs)]
    # An older version's trial: no status, no trial number tag, no params, no metrics, running.
    older = client.create_run(
        experiment,
        start_time=T0 + 5000,
        tags={tracking.PARENT_TAG: parent_id, tracking.JOB_TAG: f"{SEARCH}-trial-003"},
    )
    ids.append(older.info.run_id)

    from mlflow.entities import Metric

    done = [Metric(f"trials_{s}", n, T0, 0) for s, n in [("finished", 1), ("pruned", 1)]]
    done += [Metric("best_robust_leaf", 0.55, T0, 0), Metric("best_clean_leaf", 0.80, T0, 0)]
    client.log_batch(parent_id, metrics=done)
    client.set_tag(parent_id, "raysearch.best_trial", "0")
    client.set_tag(parent_id, "raysearch.best_run_id", ids[0])
    client.set_terminated(parent_id, status="FINISHED", end_time=T0 + 600_000)

    job = client.create_run(
        experiment,
        start_time=T0 + 10_000_000,
        tags={tracking.JOB_TAG: "train-hrz", tracking.KIND_TAG: "train"},
    )
    client.log_batch(job.info.run_id, metrics=[Metric("clean_leaf", 0.9, T0, 0)])
    client.set_terminated(job.info.run_id, status="FINISHED")
    return {"uri": uri, "client": client, "parent": parent_id, "trials": ids, "folder": folder}


def _inspect(store, *argv: str) -> int:
    return cli.main(["inspect", "--tracking-uri", store["uri"], *argv])


def _json(store, capsys, *argv: str) -> dict:
    assert _inspect(store, *argv, "--json") == 0
    return json.loads(capsys.readouterr().out)


def _numbers(document: dict) -> list:
    return [trial["trial"] for trial in document["trials"]]


def _one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err
    return err


# -- searches ------------------------------------------------------------------------------------


def test_searches_are_listed_newest_first_without_the_plain_training_job(store):
    searches = inspect_lib.list_searches(store["client"], "raysearch")
    assert [s.name for s in searches] == [SEARCH, "old"]
    demo, old = searches
    assert demo.run_id == store["parent"] and demo.status == "finished"
    assert demo.trials == {"finished": 1, "pruned": 1, "failed": 1, "running": 1}
    assert demo.other_trials == 1 and demo.trial_count == 4
    assert demo.best == {"robust_leaf": 0.55, "clean_leaf": 0.80}
    assert demo.best_trial == 0 and demo.best_run_id == store["trials"][0]
    assert demo.duration_s == pytest.approx(600.0)
    # The older search: nothing but its tag, and it still lists (blanks, no crash).
    assert old.status == "killed" and old.trials == {} and old.best == {}
    assert old.best_trial is None


def test_searches_table_has_a_row_per_search_and_blanks(store, capsys):
    assert _inspect(store) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("experiment 'raysearch'") and "2 searches" in out[0]
    header = out[1].split()
    assert header[:4] == ["search", "status", "started", "duration"]
    assert {"trials", "finished", "pruned", "failed", "best_robust_leaf", "run_id"} <= set(header)
    assert out[2].startswith(SEARCH) and "0.55" in out[2] and "10m00s" in out[2]
    assert out[3].startswith("old ") and "0.55" not in out[3]
    assert not any("train-hrz" in line for line in out)


def test_searches_json_csv_and_filter(store, capsys, tmp_path):
    document = _json(store, capsys)
    assert [s["search"] for s in document["searches"]] == [SEARCH, "old"]
    assert document["searches"][0]["trials"]["pruned"] == 1
    assert document["searches"][0]["start_time"] == "2023-11-14T22:13:20+00:00"
    filtered = _json(store, capsys, "--filter", "status=finished")
    assert [s["search"] for s in filtered["searches"]] == [SEARCH]
    by_best = _json(store, capsys, "--sort", "robust_leaf:asc")  # the best value; blanks last
    assert [s["search"] for s in by_best["searches"]] == [SEARCH, "old"]
    path = tmp_path / "searches.csv"
    assert _inspect(store, "--csv", str(path)) == 0
    assert capsys.readouterr().out.strip() == str(path)
    rows = list(csv.DictReader(path.open()))
    assert [row["search"] for row in rows] == [SEARCH, "old"]
    assert rows[1]["best_robust_leaf"] == "" and rows[0]["best_robust_leaf"] == "0.55"


# -- trials --------------------------------------------------------------------------------------


def test_trials_of_a_search_carry_params_final_metrics_and_status(store):
    search = inspect_lib.find_search(store["client"], "raysearch", SEARCH)
    trials = inspect_lib.list_trials(store["client"], search)
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert [t.status for t in trials] == ["finished", "pruned", "failed", "running"]
    best = trials[0]
    assert best.params == {"optim.lr": "0.0003", "trees": "form"}
    assert best.value("clean_leaf") == pytest.approx(0.80)  # the last epoch's, not the first's
    assert best.value("robust_leaf") == pytest.approx(0.55)
    assert best.value("transfer") == pytest.approx(0.33)
    assert best.value("worst_superclass") == pytest.approx(0.25)
    assert best.epochs == 2 and best.duration_s == pytest.approx(90.0)
    assert best.run_id == store["trials"][0]
    assert trials[1].epochs == 1 and trials[1].value("transfer") is None
    assert trials[2].error == "RuntimeError: CUDA out of memory"
    assert trials[2].value("loss") is None  # NaN reads as missing
    old = trials[3]  # from an older version: the number comes from the job name
    assert old.params == {} and old.metrics == {} and old.epochs is None
    assert old.value("param.optim.lr") is None


def test_a_search_is_found_by_run_id_or_name(store):
    by_name = inspect_lib.find_search(store["client"], "raysearch", SEARCH)
    by_id = inspect_lib.find_search(store["client"], "no-such-experiment", store["parent"])
    assert by_name.run_id == by_id.run_id == store["parent"]


def test_trials_table_prints_every_trial_with_blanks(store, capsys):
    assert _inspect(store, "--search", SEARCH) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"search {SEARCH} (finished, MLflow run {store['parent']}): 4 trials")
    assert out[1] == "best trial: 0 (robust_leaf 0.55, clean_leaf 0.8)"
    header = out[2].split()
    assert header[:2] == ["trial", "status"]
    expected = ["optim.lr", "trees", "clean_leaf", "robust_leaf", "worst_superclass", "transfer"]
    assert header[2:8] == expected and header[-3:] == ["epochs", "duration", "run_id"]
    rows = out[3:]
    assert len(rows) == 4
    assert rows[0].split()[:4] == ["0", "finished", "0.0003", "form"] and "1m30s" in rows[0]
    assert rows[3].split()[:2] == ["3", "running"] and rows[3].split()[-1] == store["trials"][3]


@pytest.mark.parametrize(
    ("sort", "order"),
    [
        ("robust_leaf", [0, 1, 2, 3]),  # descending; trials without the metric last
        ("robust_leaf:asc", [1, 0, 2, 3]),  # ... either way
        ("param.optim.lr", [1, 0, 2, 3]),  # params logged as text sort as numbers
        ("trial:desc", [3, 2, 1, 0]),
        ("loss:asc", [0, 1, 2, 3]),  # any metric; NaN is missing
    ],
)
def test_trials_sort_by_any_metric(store, capsys, sort, order):
    assert _numbers(_json(store, capsys, "--search", SEARCH, "--sort", sort)) == order


@pytest.mark.parametrize(
    ("expression", "numbers"),
    [
        ("robust_leaf>0.5", [0]),
        ("robust_leaf >= 0.3", [0, 1]),
        ("status=finished", [0]),
        ("status='pruned'", [1]),
        ("status!=finished", [1, 2, 3]),
        ("param.optim.lr<1e-3", [0, 2]),
        ("param.trees=form+corners", [1]),
        ("param.optim.lr<1e-3 and status=failed", [2]),
        ("clean_leaf>0.5 AND robust_leaf<0.5 and epochs=1", [1]),
        ("trial<=1", [0, 1]),
    ],
)
def test_trials_filter(store, capsys, expression, numbers):
    assert _numbers(_json(store, capsys, "--search", SEARCH, "--filter", expression)) == numbers


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--filter", "robust_leaf>>0.5"], "`--filter` must be"),
        (["--filter", "robust_leaf"], "`--filter` must be"),
        (["--filter", "robust_leaf>0.5 or clean_leaf>0.5"], "`--filter` must be"),
        (["--filter", "__import__('os').system('true')"], "`--filter` must be"),
        (["--filter", "robust_leaf>0.5 and"], "`--filter` must be"),
        (["--filter", "robust_lef>0.5"], "'robust_lef' is none"),
        (["--sort", "robust_leaf:up"], "`--sort` must be"),
        (["--sort", "robust_lef"], "'robust_lef' is none"),
    ],
)
def test_bad_sort_or_filter_gives_one_line_and_exit_2(store, capsys, argv, needle):
    assert _inspect(store, "--search", SEARCH, *argv) == 2
    _one_line_error(capsys, needle)


def test_trials_json_document(store, capsys):
    document = _json(store, capsys, "--search", store["parent"])
    assert document["search"]["search"] == SEARCH and document["experiment"] == "raysearch"
    first, _, failed, old = document["trials"]
    assert first["params"] == {"optim.lr": "0.0003", "trees": "form"}
    assert first["metrics"]["robust_leaf"] == pytest.approx(0.55)
    assert first["metrics"]["clean.form.1"] == pytest.approx(0.9)
    assert first["epochs"] == 2 and first["run_id"] == store["trials"][0]
    assert failed["status"] == "failed" and failed["metrics"]["loss"] is None  # NaN: null
    assert failed["error"] == "RuntimeError: CUDA out of memory"
    assert old == {
        "trial": 3,
        "status": "running",
        "params": {},
        "metrics": {},
        "epochs": None,
        "duration_s": old["duration_s"],
        "run_id": store["trials"][3],
        "error": None,
    }


def test_trials_csv_file(store, capsys, tmp_path):
    path = tmp_path / "out" / "trials.csv"
    assert _inspect(store, "--search", SEARCH, "--sort", "robust_leaf", "--csv", str(path)) == 0
    assert capsys.readouterr().out.strip() == str(path)
    rows = list(csv.DictReader(path.open()))
    assert [row["trial"] for row in rows] == ["0", "1", "2", "3"]
    assert rows[0]["param.optim.lr"] == "0.0003" and float(rows[0]["transfer"]) == 0.33
    assert rows[0]["clean.form.1"] == "0.9"
    assert rows[3]["status"] == "running" and rows[3]["robust_leaf"] == ""


def test_no_match_prints_a_line_not_a_table(store, capsys):
    assert _inspect(store, "--search", SEARCH, "--filter", "robust_leaf>0.99") == 0
    out = capsys.readouterr().out
    assert "0 of 4 trials shown" in out and "no trials match" in out


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--search", "no-such-search"], "`--search` must be a search name or parent run id"),
        (["--search", "0" * 32], "`--search` must be"),
        (["--search", "x' or name != '"], "`--search` must be"),  # never reaches a query
        (["--experiment", "nope"], "`--experiment` must be an MLflow experiment"),
        (["--search", "train-hrz"], "`--search` must be"),  # a plain job is not a search
    ],
)
def test_unknown_search_or_experiment_gives_one_line_and_exit_2(store, capsys, argv, needle):
    assert _inspect(store, *argv) == 2
    err = _one_line_error(capsys, needle)
    if argv[0] == "--search" and argv[1] == "no-such-search":
        assert SEARCH in err  # the searches there are listed


def test_a_trial_run_id_is_not_a_search(store, capsys):
    assert _inspect(store, "--search", store["trials"][0]) == 2
    _one_line_error(capsys, "not a trial's")


def test_a_missing_local_store_is_not_created(tmp_path, capsys):
    database = tmp_path / "mlflow.db"
    assert cli.main(["inspect", "--tracking-uri", f"sqlite:///{database}"]) == 2
    _one_line_error(capsys, "`--tracking-uri` must be an existing MLflow store")
    assert not database.exists()
    assert cli.main(["ui", "--tracking-uri", f"sqlite:///{database}"]) == 2
    assert not database.exists()


def test_default_tracking_uri_is_the_configs(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert resolve_tracking_uri(None) == f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    assert resolve_tracking_uri(None) == "http://mlflow.internal:5000"
    assert resolve_tracking_uri("sqlite:///x.db") == "sqlite:///x.db"


def test_a_search_without_trial_runs_lists_none(store, capsys):
    assert _inspect(store, "--search", "old") == 0
    assert capsys.readouterr().out.splitlines()[-1] == "no trials yet"
    assert _json(store, capsys, "--search", "old")["trials"] == []


# -- pure pieces ---------------------------------------------------------------------------------


def test_filter_language_parses_without_eval():
    conditions = inspect_lib.parse_filter("a.b<=1e-3 and name='x and y' and c!=-2")
    assert [(c.field, c.op, c.text, c.quoted) for c in conditions] == [
        ("a.b", "<=", "1e-3", False),
        ("name", "=", "x and y", True),
        ("c", "!=", "-2", False),
    ]
    assert conditions[0].number == pytest.approx(1e-3) and conditions[1].number is None


def test_durations_read_well():
    assert [inspect_lib.format_duration(s) for s in (None, 42, 185, 3720)] == [
        "",
        "42s",
        "3m05s",
        "1h02m",
    ]


# -- ui ------------------------------------------------------------------------------------------


def _ui_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    ui_command.register(parser.add_subparsers())
    return parser.parse_args(["ui", *argv])


def test_ui_binds_localhost_by_default_with_artifacts_beside_the_database(tmp_path):
    args = _ui_args()
    assert (args.host, args.port) == ("127.0.0.1", 5000)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    command = ui_command.ui_command(uri, host=args.host, port=args.port, python="python")
    assert command[:4] == ["python", "-m", "mlflow", "ui"]
    options = dict(zip(command[4::2], command[5::2], strict=True))
    assert options == {
        "--backend-store-uri": uri,
        "--default-artifact-root": (tmp_path / "mlartifacts").as_uri(),
        "--host": "127.0.0.1",
        "--port": "5000",
    }
    assert "0.0.0.0" not in command


def test_ui_honours_host_and_port():
    args = _ui_args("--host", "0.0.0.0", "--port", "8080")
    command = ui_command.ui_command("postgresql://db/mlflow", host=args.host, port=args.port)
    assert command[command.index("--host") + 1] == "0.0.0.0"
    assert command[command.index("--port") + 1] == "8080"
    assert "--default-artifact-root" not in command  # only a local store has one beside it
    assert ui_command.ui_url("0.0.0.0", 8080) == "http://127.0.0.1:8080"
    assert ui_command.ui_url("::1", 5000) == "http://[::1]:5000"


def test_ui_prints_the_url_first_then_runs_mlflow(store, monkeypatch, capsys):
    calls = []

    def fake_exec(path, command):
        calls.append((command, capsys.readouterr().out))
        assert path == command[0]

    monkeypatch.setattr(ui_command.os, "execv", fake_exec)
    monkeypatch.setattr(
        ui_command.subprocess, "call", lambda command: fake_exec(command[0], command) or 0
    )
    assert cli.main(["ui", "--tracking-uri", store["uri"], "--port", "5123"]) == 0
    ((command, printed),) = calls
    assert printed.startswith("MLflow UI: http://127.0.0.1:5123")
    assert command[command.index("--backend-store-uri") + 1] == store["uri"]


def test_ui_refuses_a_bad_port_in_one_line(store, capsys):
    assert cli.main(["ui", "--tracking-uri", store["uri"], "--port", "70000"]) == 2
    _one_line_error(capsys, "`--port` must be")
