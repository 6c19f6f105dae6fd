"""The commands that use an MLflow store never create, change or migrate one they should not.

`inspect`, `ui`, `predict` and `evaluate` only read; `promote` writes, but only into an existing
store. Each is pointed at what MLflow would otherwise turn into a store (a missing file, an
unrelated SQLite file, an empty one, random bytes, a truncated or older store, a folder, a file
store, a tracking server that does not answer) and must refuse it in one line, leaving the file
byte for byte (and its modification time) as it was. No Ray, no training.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import sqlite3
import sys
import time
import warnings
from pathlib import Path

import pytest

from raysearch import cli, stores, tracking
from raysearch.commands import ui as ui_command
from trainables.errors import UserInputError

SEARCH = "store-search"
TIMEOUT, RETRIES = "MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """An MLflow store with the experiment ``raysearch`` and one finished search (made once;
    tests work on copies)."""
    database = tmp_path_factory.mktemp("pristine") / "mlflow.db"
    client = tracking.client(f"sqlite:///{database}")
    experiment = tracking.experiment_id(client, "raysearch")
    run = client.create_run(
        experiment, tags={tracking.SEARCH_TAG: SEARCH, tracking.KIND_TAG: "search"}
    )
    client.set_terminated(run.info.run_id, status="FINISHED")
    return database


@pytest.fixture()
def isolated(tmp_path, monkeypatch) -> Path:
    """An empty working folder, no tracking URI in the environment, MLflow's HTTP waits unset
    (and put back as they were after the test)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for name in (TIMEOUT, RETRIES):
        monkeypatch.setenv(name, "0")  # recorded, so that the test's own value is undone
        monkeypatch.delenv(name)
    return tmp_path


@pytest.fixture(autouse=True)
def started(monkeypatch) -> list:
    """The MLflow UI command lines `raysearch ui` would run (none is started here)."""
    commands: list = []
    monkeypatch.setattr(ui_command.os, "execv", lambda path, command: commands.append(command))
    monkeypatch.setattr(ui_command.subprocess, "call", lambda command: commands.append(command))
    return commands


def _fingerprint(path: Path) -> tuple:
    stat = path.stat()
    return hashlib.sha256(path.read_bytes()).hexdigest(), stat.st_size, stat.st_mtime_ns


def _one_line(capsys, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("raysearch: error: "), err
    assert "PosixPath" not in err and "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    return err


def _sqlite(path: Path, *statements: str) -> None:
    connection = sqlite3.connect(path)
    for statement in statements:
        connection.execute(statement)
    connection.commit()
    connection.close()


def _make(kind: str, folder: Path, pristine: Path) -> Path:
    """A file (or folder) that is not an MLflow store MLflow could open without writing."""
    path = folder / f"{kind}.db"
    if kind == "unrelated":
        _sqlite(path, "CREATE TABLE notes (text TEXT)", "INSERT INTO notes VALUES ('keep me')")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "random":
        path.write_bytes(os.urandom(4096))
    elif kind == "truncated":
        path.write_bytes(pristine.read_bytes()[:20_000])
    elif kind == "older":  # an MLflow store at an older schema: MLflow would migrate it
        shutil.copy(pristine, path)
        _sqlite(path, "UPDATE alembic_version SET version_num = '0a8213491aaa'")
    elif kind == "folder":
        path.mkdir()
    return path


NOT_STORES = {
    "unrelated": "has no MLflow tables",
    "empty": "is an empty file",
    "random": "is not an SQLite database",
    "truncated": "is truncated",
    "older": "is at schema 0a8213491aaa",
    "folder": "is a folder",
}


# -- jobs and searches: the store is checked before Ray starts -----------------------------------


@pytest.mark.parametrize("kind", sorted(NOT_STORES))
def test_train_refuses_what_is_not_a_store_before_ray_starts(kind, isolated, pristine, capsys):
    path = _make(kind, isolated, pristine)
    before = _fingerprint(path) if path.is_file() else None
    listing = sorted(isolated.iterdir())
    started = time.perf_counter()
    assert cli.main(["train", f"mlflow.tracking_uri=sqlite:///{path}"]) == 2
    _one_line(capsys, "`mlflow.tracking_uri` must be", f"{path} {NOT_STORES[kind]}")
    assert time.perf_counter() - started < 15  # no Ray, no training
    if before is not None:
        assert _fingerprint(path) == before
    assert sorted(isolated.iterdir()) == listing


def test_a_new_store_must_be_creatable_and_nothing_is_made_by_the_check(isolated):
    stores.check_store_for_writing(f"sqlite:///{isolated / 'new' / 'mlflow.db'}")
    assert list(isolated.iterdir()) == []  # MLflow makes it later, with the job's run
    (isolated / "file").write_text("")
    for uri, fragment in [
        (f"sqlite:///{isolated / 'file' / 'mlflow.db'}", "is a file)"),
        ("sqlite:////proc/mlflow.db", "outside /proc and /sys"),
        ("file:///tmp/mlruns", "MLflow's file store"),
    ]:
        with pytest.raises(UserInputError, match="^`mlflow.tracking_uri` must be") as caught:
            stores.check_store_for_writing(uri)
        assert fragment in str(caught.value)


# -- read-only commands on what is not a store ---------------------------------------------------


@pytest.mark.parametrize("kind", sorted(NOT_STORES))
def test_inspect_refuses_what_is_not_a_store_and_leaves_it_as_it_was(
    kind, isolated, pristine, capsys
):
    path = _make(kind, isolated, pristine)
    before = _fingerprint(path) if path.is_file() else None
    listing = sorted(isolated.iterdir())
    assert cli.main(["inspect", "--tracking-uri", f"sqlite:///{path}"]) == 2
    _one_line(capsys, "`--tracking-uri` must be", f"{path} {NOT_STORES[kind]}")
    if before is not None:
        assert _fingerprint(path) == before
    assert sorted(isolated.iterdir()) == listing  # no journal, no store beside it


@pytest.mark.parametrize("kind", ["unrelated", "empty", "random"])
def test_ui_and_promote_refuse_what_is_not_a_store(kind, isolated, pristine, started, capsys):
    path = _make(kind, isolated, pristine)
    before = _fingerprint(path)
    uri = f"sqlite:///{path}"
    assert cli.main(["ui", "--tracking-uri", uri]) == 2
    _one_line(capsys, NOT_STORES[kind])
    assert started == []
    promote = ["promote", "--search", SEARCH, "--metric", "robust_leaf", "--name", "m"]
    assert cli.main([*promote, "--tracking-uri", uri]) == 2
    _one_line(capsys, NOT_STORES[kind])
    assert _fingerprint(path) == before


def test_reading_a_store_leaves_it_byte_for_byte(isolated, pristine, capsys):
    path = isolated / "mlflow.db"
    shutil.copy2(pristine, path)
    before = _fingerprint(path)
    assert cli.main(["inspect", "--tracking-uri", f"sqlite:///{path}"]) == 0
    assert SEARCH in capsys.readouterr().out
    assert cli.main(["inspect", "--search", SEARCH]) == 0  # the default store: ./mlflow.db
    assert _fingerprint(path) == before
    assert sorted(p.name for p in isolated.iterdir()) == ["mlflow.db"]


@pytest.mark.parametrize(
    "argv",
    [
        ["inspect"],
        ["ui"],
        ["evaluate", "--model", "models:/x@y"],
        ["evaluate", "--model", "0123456789abcdef0123456789abcdef"],  # a run id
        ["predict", "--model", "models:/x@y", "image.png"],
        ["promote", "--search", SEARCH, "--metric", "robust_leaf", "--name", "m"],
    ],
    ids=["inspect", "ui", "evaluate-model", "evaluate-run", "predict", "promote"],
)
def test_no_store_is_made_where_there_is_none(argv, isolated, capsys):
    (isolated / "image.png").write_bytes(b"not read: the store is refused first")
    assert cli.main(argv) == 2
    _one_line(capsys, "`--tracking-uri` must be an existing MLflow store", "raysearch train")
    assert sorted(p.name for p in isolated.iterdir()) == ["image.png"]


def test_a_model_that_is_no_folder_and_no_run_id_never_opens_the_store(isolated, capsys):
    assert cli.main(["evaluate", "--model", "not-a-run-or-folder"]) == 2
    _one_line(capsys, "`--model` must be models:/NAME@ALIAS, a run id")
    assert list(isolated.iterdir()) == []


# -- tracking URIs -------------------------------------------------------------------------------


@pytest.mark.parametrize("uri", ["file:///tmp/mlruns", "./mlruns", "mlruns", "sqlite://"])
def test_file_stores_and_bare_paths_are_refused_with_the_accepted_forms(uri, isolated, capsys):
    for command in ("inspect", "ui"):
        assert cli.main([command, "--tracking-uri", uri]) == 2
        _one_line(capsys, "sqlite:///PATH, http(s)://HOST[:PORT], databricks", repr(uri))
    assert list(isolated.iterdir()) == []


def test_accepted_uri_kinds():
    assert stores.uri_kind("sqlite:////abs/mlflow.db") == "sqlite"
    assert stores.uri_kind("sqlite:///relative.db") == "sqlite"
    assert stores.uri_kind("https://mlflow.example.org") == "http"
    assert stores.uri_kind("databricks") == stores.uri_kind("databricks://profile")
    assert stores.uri_kind("postgresql+psycopg2://u:p@db/mlflow") == "database"
    assert tracking.sqlite_file("sqlite:///relative.db?timeout=5") == Path("relative.db")


def test_a_database_without_mlflow_tables_is_refused_through_sqlalchemy_too(isolated, capsys):
    path = _make("unrelated", isolated, Path())
    before = _fingerprint(path)
    with pytest.raises(UserInputError, match="has no MLflow tables"):
        stores._check_database_server(f"sqlite:///{path}", field="--tracking-uri")
    assert _fingerprint(path) == before


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_server_fails_fast_in_one_line(isolated, capsys):
    uri = f"http://127.0.0.1:{_closed_port()}"
    start = time.monotonic()
    assert cli.main(["inspect", "--tracking-uri", uri]) == 2
    _one_line(capsys, "`--tracking-uri` must be a reachable MLflow tracking server", uri)
    (isolated / "image.png").write_bytes(b"x")
    argv = ["predict", "--model", "models:/x@y", "image.png", "--tracking-uri", uri]
    assert cli.main(argv) == 2
    _one_line(capsys, "reachable MLflow tracking server", uri)
    assert time.monotonic() - start < 15
    # Read-only commands bound MLflow's waits (120 s, 7 retries by default)...
    assert os.environ[TIMEOUT] == stores.READ_ONLY_HTTP_WAITS[TIMEOUT]
    assert os.environ[RETRIES] == stores.READ_ONLY_HTTP_WAITS[RETRIES]


def test_the_users_own_http_waits_are_kept(isolated, monkeypatch, capsys):
    monkeypatch.setenv(TIMEOUT, "7")
    assert cli.main(["inspect", "--tracking-uri", f"http://127.0.0.1:{_closed_port()}"]) == 2
    _one_line(capsys, "Connection refused")
    assert os.environ[TIMEOUT] == "7"


# -- filter strings and model names --------------------------------------------------------------


@pytest.mark.parametrize("value", ["demo-1", "it's", 'say "hi"', "a b%_*", "été"])
def test_filter_values_read_back_as_written(value):
    from mlflow.utils.search_utils import SearchUtils

    literal = tracking.filter_value(value, field="x")
    query = f"tags.`raysearch.search` = {literal} and attributes.status = 'RUNNING'"
    (clause, _) = SearchUtils.parse_search_filter(query)
    assert clause["value"] == value


@pytest.mark.parametrize("value", ['it\'s "both"', "back\\slash", "new\nline"])
def test_filter_values_that_cannot_be_written_are_refused(value):
    with pytest.raises(UserInputError, match="`--search` must be free of backslashes"):
        tracking.filter_value(value, field="--search")


@pytest.mark.parametrize(
    ("name", "alias", "needle"),
    [
        ("it's", "champion", "`--name` must be 1 to 256 characters"),
        ("x' or name != '", "champion", "`--name` must be"),
        ("a/b", "champion", "`--name` must be"),
        ("models:x", "champion", "`--name` must be"),
        ("..", "champion", "`--name` must be"),
        ("ok", "latest", "`--alias` must be not `latest`"),
        ("ok", "v3", "`--alias` must be not `latest`"),
        ("ok", "best one", "`--alias` must be 1 to 255 characters"),
    ],
)
def test_promote_refuses_bad_names_before_the_store_is_touched(
    name, alias, needle, isolated, pristine, capsys
):
    path = isolated / "mlflow.db"
    shutil.copy2(pristine, path)
    before = _fingerprint(path)
    argv = ["promote", "--search", SEARCH, "--metric", "robust_leaf"]
    assert cli.main([*argv, "--name", name, "--alias", alias]) == 2
    _one_line(capsys, needle)
    assert _fingerprint(path) == before


class _Registry:
    """The part of an MlflowClient that looks up model versions."""

    def __init__(self, versions):
        self.versions, self.queries = versions, []

    def search_model_versions(self, query):
        self.queries.append(query)
        if isinstance(self.versions, Exception):
            raise self.versions
        return self.versions


def test_an_existing_version_is_found_by_its_run_and_a_failed_lookup_is_not_none():
    from types import SimpleNamespace

    from raysearch.registry import SOURCE_RUN_TAG, _existing_version

    mine = SimpleNamespace(version="2", tags={SOURCE_RUN_TAG: "run-a"})
    other = SimpleNamespace(version="1", tags={SOURCE_RUN_TAG: "run-b"})
    registry = _Registry([other, mine])
    assert _existing_version(registry, "smoke-model", "run-a") is mine
    assert registry.queries == ["name = 'smoke-model'"]
    # A lookup that fails must not read as "no version yet": that registers a duplicate.
    with pytest.raises(RuntimeError):
        _existing_version(_Registry(RuntimeError("store down")), "smoke-model", "run-a")
    with pytest.raises(UserInputError, match="`--name` must be"):
        _existing_version(_Registry([mine]), "it's", "run-a")


# -- predict's console ---------------------------------------------------------------------------


def test_predict_does_not_relay_mlflows_request_for_type_hints(
    isolated, monkeypatch, capsys, recwarn
):
    # A fresh import defines the pyfunc model class again, where MLflow warns (once a process).
    monkeypatch.delitem(sys.modules, "raysearch.serving", raising=False)
    monkeypatch.setattr(warnings, "onceregistry", {})
    assert cli.main(["predict", "--model", str(isolated), "missing.png"]) == 2
    _one_line(capsys, "`IMAGE` must be an existing image file")
    assert not [w for w in recwarn if "type hints" in str(w.message)]


# -- ui ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "warned"),
    [
        ("127.0.0.1", False),
        ("127.0.0.2", False),
        ("::1", False),
        ("localhost", False),
        ("0.0.0.0", True),
        ("::", True),
        ("192.168.1.10", True),
        ("10.0.0.5", True),
        ("my-workstation.example.org", True),
    ],
)
def test_ui_warns_for_every_host_other_machines_can_reach(
    host, warned, isolated, pristine, started, capsys
):
    shutil.copy2(pristine, isolated / "mlflow.db")
    assert cli.main(["ui", "--host", host]) == 0
    assert len(started) == 1
    err = capsys.readouterr().err.strip()
    if warned:
        assert len(err.splitlines()) == 1 and "anyone who can reach it" in err, err
        assert host in err
    else:
        assert err == ""
