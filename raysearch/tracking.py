"""MLflow naming and bookkeeping of training jobs (the thin logging layer over computed results).

One MLflow run per job, found again by the job's tag ``raysearch.job`` so that a retried or
resumed job continues its run instead of creating another. A search has one parent run (tag
``raysearch.search``, kind ``search``); its trials' runs carry ``mlflow.parentRunId`` and end
with ``raysearch.status`` = ``finished``, ``pruned`` (stopped early by the scheduler: FINISHED,
not FAILED) or ``failed``. The driver creates (or reopens) the
run and logs params and artifacts; rank 0 of the workers logs per-epoch metrics into it
(:class:`trainables.loop.EpochLog`). Runs end FINISHED, or FAILED with the reason in the tag
``raysearch.error``; a job or search stopped by Ctrl-C or SIGTERM ends KILLED
(:class:`SigtermGuard`).

The commands that only use a store (inspect, ui, promote, predict, evaluate) open it with
:func:`open_store`, which refuses what MLflow would otherwise turn into a store: a missing
SQLite file, a file that is not an MLflow database, a database at another schema version. Values
written into MLflow filter strings go through :func:`filter_value`.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import threading
from pathlib import Path
from urllib.parse import urlsplit

from trainables.errors import UserInputError, must

JOB_TAG = "raysearch.job"
ERROR_TAG = "raysearch.error"
KIND_TAG = "raysearch.kind"
SEARCH_TAG = "raysearch.search"
TRIAL_TAG = "raysearch.trial"
STATUS_TAG = "raysearch.status"
PARENT_TAG = "mlflow.parentRunId"
ARTIFACT_FOLDER = "mlartifacts"
#: The ``raysearch.error`` of a job or search ended by SIGTERM.
STOPPED_BY_SIGTERM = "stopped by SIGTERM"


def client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def experiment_id(mlflow_client, name: str) -> str:
    """Get or create the experiment; artifacts of a local store go next to the database."""
    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None
    uri = mlflow_client.tracking_uri
    if uri.startswith("sqlite:///"):
        database = Path(uri.removeprefix("sqlite:///")).expanduser().resolve()
        location = (database.parent / ARTIFACT_FOLDER).as_uri()
    return mlflow_client.create_experiment(name, artifact_location=location)


def find_run(mlflow_client, experiment: str, tag: str, value: str):
    """The run whose ``tag`` is ``value`` in ``experiment`` (None when there is none)."""
    query = f"tags.`{tag}` = {filter_value(value, field=tag)}"
    runs = mlflow_client.search_runs([experiment], filter_string=query, max_results=2)
    return runs[0] if runs else None


def find_job_run(mlflow_client, experiment: str, job: str):
    """The run of ``job`` in ``experiment`` (None when there is none)."""
    return find_run(mlflow_client, experiment, JOB_TAG, job)


def get_or_create_job_run(mlflow_client, experiment: str, job: str, *, tags: dict | None = None):
    """The job's run, reopened (status RUNNING) when it exists; created otherwise."""
    return _get_or_create(mlflow_client, experiment, JOB_TAG, job, "train", tags)


def get_or_create_search_run(mlflow_client, experiment: str, search: str):
    """The parent run of ``search``, reopened when it exists; created otherwise."""
    return _get_or_create(mlflow_client, experiment, SEARCH_TAG, search, "search", None)


def _get_or_create(mlflow_client, experiment: str, tag: str, value: str, kind: str, tags):
    run = find_run(mlflow_client, experiment, tag, value)
    if run is not None:
        mlflow_client.update_run(run.info.run_id, status="RUNNING")
        return run, False
    run = mlflow_client.create_run(
        experiment, run_name=value, tags={tag: value, KIND_TAG: kind, **(tags or {})}
    )
    return run, True


def log_params(mlflow_client, run_id: str, params: dict) -> None:
    """Log flattened params (MLflow caps values at 6000 characters)."""
    from mlflow.entities import Param

    entries = [Param(key, str(value)[:6000]) for key, value in params.items()]
    for start in range(0, len(entries), 100):  # log_batch takes at most 100 params
        mlflow_client.log_batch(run_id, params=entries[start : start + 100])


def end_run(mlflow_client, run_id: str, *, error: str | None = None) -> None:
    if error is None:
        mlflow_client.set_terminated(run_id, status="FINISHED")
        return
    mlflow_client.set_tag(run_id, ERROR_TAG, error[:5000])
    mlflow_client.set_terminated(run_id, status="FAILED")


# -- filter strings ------------------------------------------------------------------------------


def filter_value(value: str, *, field: str) -> str:
    """``value`` as a quoted literal of an MLflow filter string.

    MLflow strips the quotes and reads what is between them as is: there is no escape. A value
    holding a single quote is written in double quotes; one holding both kinds of quote, a
    backslash (its parser reads one before the closing quote as an escape) or a control
    character cannot be written, and is refused with ``field`` named.
    """
    if "\\" in value or ("'" in value and '"' in value) or not value.isprintable():
        raise must(
            field,
            "free of backslashes, control characters and one of the two kinds of quote",
            value,
        )
    return f'"{value}"' if "'" in value else f"'{value}'"


# -- opening a store -----------------------------------------------------------------------------

#: The tracking URIs the commands accept (MLflow's file store is in maintenance mode).
ACCEPTED_URIS = (
    "sqlite:///PATH, http(s)://HOST[:PORT], databricks[://PROFILE] or a "
    "postgresql://, mysql:// or mssql:// database URI (MLflow's file store, file:// or a "
    "folder, is not supported)"
)
_DATABASES = ("postgresql", "mysql", "mssql")
_SQLITE_HEADER = b"SQLite format 3\x00"
#: Tables every MLflow tracking database has (``alembic_version`` holds its schema version).
_MLFLOW_TABLES = frozenset({"alembic_version", "experiments", "runs"})
#: How long a read-only command waits for a tracking server per try, and how often it retries,
#: unless the environment says otherwise: MLflow's own defaults (120 s, 7 retries with growing
#: backoff) make an unreachable server look like a hang of several minutes.
READ_ONLY_HTTP_WAITS = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "5", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1"}


def uri_kind(uri: str, *, field: str = "--tracking-uri") -> str:
    """``sqlite``, ``http``, ``databricks`` or ``database`` (a database server); one line naming
    the accepted forms for anything else (a file store, a bare path, a typo)."""
    scheme = urlsplit(uri).scheme.lower() if "://" in uri else ""
    dialect = scheme.partition("+")[0]  # sqlite+pysqlite://, postgresql+psycopg2:// ...
    if dialect == "sqlite" and uri.partition("://")[2].startswith("/"):
        return "sqlite"
    if scheme in ("http", "https"):
        return "http"
    if uri == "databricks" or scheme == "databricks":
        return "databricks"
    if dialect in _DATABASES:
        return "database"
    raise must(field, ACCEPTED_URIS, uri)


def sqlite_path(uri: str) -> Path:
    """The database file of a ``sqlite:///`` URI, as SQLAlchemy opens it (relative to the
    working directory unless absolute: ``sqlite:////abs/path``)."""
    return Path(uri.partition(":///")[2].partition("?")[0])


def open_store(uri: str, *, field: str = "--tracking-uri", read_only: bool = True):
    """An MlflowClient on the existing store ``uri``, checked before MLflow sees it.

    MLflow creates a store that is missing, adds its tables to any other database and migrates
    an older one; a command that only uses a store must do none of that. So a SQLite file must
    exist and be an MLflow database at this MLflow's schema, read through a read-only connection
    first (:func:`check_sqlite_store`); a database server must hold MLflow's tables; a tracking
    server (or Databricks) gets bounded waits (:data:`READ_ONLY_HTTP_WAITS`) when ``read_only``,
    so that one that does not answer fails in seconds, naming the URI.
    """
    require_store(uri, field=field)
    if read_only and uri_kind(uri, field=field) in ("http", "databricks"):
        for name, value in READ_ONLY_HTTP_WAITS.items():
            os.environ.setdefault(name, value)
    return client(uri)


def require_store(uri: str, *, field: str = "--tracking-uri") -> None:
    """Refuse (one line) a URI that is not an existing MLflow store; nothing is written."""
    kind = uri_kind(uri, field=field)
    if kind == "sqlite":
        check_sqlite_store(uri, field=field)
    elif kind == "database":
        _check_database_server(uri, field=field)


def check_sqlite_store(uri: str, *, field: str = "--tracking-uri") -> None:
    """The SQLite file of ``uri`` exists and is an MLflow store MLflow opens without writing:
    an SQLite database (its header, its size) with MLflow's tables at this MLflow's schema.
    Read with a read-only connection; the file is left as it was."""
    path = sqlite_path(uri)
    if not path.exists():
        raise _refused(
            field,
            "an existing MLflow store (run `raysearch train` or `raysearch launch` first, or "
            "give --tracking-uri or MLFLOW_TRACKING_URI)",
            f"there is no {path.absolute()}",
        )
    try:
        with path.open("rb") as file:
            header = file.read(100)
        size = path.stat().st_size
    except IsADirectoryError:
        raise _refused(field, "an MLflow store", f"{path} is a folder") from None
    except OSError as error:
        raise _unreadable(field, path, error.strerror or str(error)) from None
    if not header:
        raise _refused(field, "an MLflow store", f"{path} is an empty file")
    if not header.startswith(_SQLITE_HEADER) or len(header) < 100:
        raise _refused(field, "an MLflow store", f"{path} is not an SQLite database")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    if header[24:28] == header[92:96] and size < page_size * pages:  # the page count is valid
        wanted = "a readable MLflow store"
        raise _refused(field, wanted, f"{path} is truncated ({size} of {page_size * pages} bytes)")
    tables, version = _read_sqlite(field, path)
    if not _MLFLOW_TABLES <= tables:
        raise _refused(field, "an MLflow store", f"{path} has no MLflow tables")
    _check_schema(field, uri, path, version)


def _read_sqlite(field: str, path: Path) -> tuple[set[str], str | None]:
    """Table names and MLflow schema version, through a read-only connection."""
    connection = None
    try:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        query = "SELECT name FROM sqlite_master WHERE type = 'table'"
        tables = {row[0] for row in connection.execute(query)}
        version = None
        if "alembic_version" in tables:
            row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
            version = row[0] if row else None
    except sqlite3.DatabaseError as error:
        raise _unreadable(field, path, str(error)) from None
    finally:
        if connection is not None:
            connection.close()
    return tables, version


def _check_schema(field: str, uri: str, where, version: str | None) -> None:
    """MLflow migrates a store at an older schema on opening it: refuse one."""
    try:
        from mlflow.store.db.utils import _get_latest_schema_revision

        head = _get_latest_schema_revision()
    except Exception:  # MLflow moved it: it checks the schema itself when it opens the store
        return
    if version != head:
        import mlflow

        raise _refused(
            field,
            f"an MLflow store at the schema of MLflow {mlflow.__version__} ({head})",
            f"{where} is at schema {version or 'none'}, written by another MLflow version: back "
            f"it up, then run `mlflow db upgrade {uri}`, or use that version",
        )


def _check_database_server(uri: str, *, field: str) -> None:
    """A database server's store holds MLflow's tables (MLflow would add them to any other)."""
    try:
        import sqlalchemy

        engine = sqlalchemy.create_engine(uri)
        try:
            with engine.connect() as connection:
                tables = set(sqlalchemy.inspect(connection).get_table_names())
                version = None
                if "alembic_version" in tables:
                    query = sqlalchemy.text("SELECT version_num FROM alembic_version")
                    version = connection.execute(query).scalar()
        finally:
            engine.dispose()
    except Exception as error:
        reason = " ".join(str(error).split("\n")[0].split())[:200]
        wanted = "a reachable MLflow database"
        raise _refused(field, wanted, f"{_redacted(uri)} is not ({reason})") from None
    if not _MLFLOW_TABLES <= tables:
        raise _refused(field, "an MLflow store", f"{_redacted(uri)} has no MLflow tables")
    _check_schema(field, _redacted(uri), _redacted(uri), version)


def _redacted(uri: str) -> str:
    """``uri`` without its password."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def _refused(field: str, constraint: str, what: str) -> UserInputError:
    """The project's error line, with what is wrong said of the store itself:
    "`field` must be <constraint>, but <what>."."""
    return UserInputError(f"`{field}` must be {constraint}, but {what}.")


def _unreadable(field: str, path: Path, reason: str) -> UserInputError:
    return _refused(field, "a readable MLflow store", f"{path} cannot be read ({reason})")


_ERRNO = re.compile(r"\[Errno -?\d+\] ([^\"'()]+)")
#: An MLflow run id (32 hex digits).
RUN_ID = re.compile(r"[0-9a-f]{32}")


def unreachable(error: BaseException) -> str | None:
    """Why a tracking server could not be reached (None for any other failure), in a few words.

    MLflow reports a failed connection as "API request to ... failed with exception
    HTTPConnectionPool(...): Max retries exceeded ... [Errno 111] Connection refused".
    """
    text = " ".join(str(error).split())
    if "failed with exception" not in text:
        return None
    found = _ERRNO.search(text)
    if found:
        return found.group(1).strip()
    if "timed out" in text.lower():
        wait = os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT", "120")
        return f"no answer within {wait} s (MLFLOW_HTTP_REQUEST_TIMEOUT)"
    return text[:200]


def store_failure(uri: str, error: BaseException) -> UserInputError | None:
    """The one-line error of a tracking server that could not be reached (None otherwise)."""
    reason = unreachable(error)
    if reason is None:
        return None
    return _refused(
        "--tracking-uri", "a reachable MLflow tracking server", f"{uri} is not ({reason})"
    )


# -- stopping on SIGTERM -------------------------------------------------------------------------


class Stopped(KeyboardInterrupt):
    """SIGTERM, raised as an interrupt so that the Ctrl-C path closes the runs."""


class SigtermGuard:
    """Turns SIGTERM into :class:`Stopped` while a job or a search runs, so that its MLflow runs
    end KILLED with ``raysearch.error`` = :data:`STOPPED_BY_SIGTERM` instead of staying RUNNING.

    Use it as a context manager: :meth:`arm` installs the handler (after ``ray.init``, which
    installs its own), :meth:`defer` turns a later SIGTERM into a note (``received``) so that
    the runs' clean-up finishes first, and leaving the block restores the previous handler.
    Outside the main thread (a trial driver inside Ray Tune) Python cannot handle signals:
    nothing is installed there.
    """

    def __init__(self) -> None:
        self.received = False
        self._raising = False
        self._previous = None
        self._installed = False

    @property
    def reason(self) -> str | None:
        """:data:`STOPPED_BY_SIGTERM` once a SIGTERM arrived, else None."""
        return STOPPED_BY_SIGTERM if self.received else None

    def arm(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        if not self._installed:
            previous = signal.signal(signal.SIGTERM, self._handle)
            self._previous = signal.SIG_DFL if previous is None else previous
            self._installed = True
        self._raising = True

    def defer(self) -> None:
        self._raising = False

    def _handle(self, signum, frame) -> None:
        self.received = True
        if self._raising:
            self._raising = False  # once: a second SIGTERM during the clean-up is only noted
            raise Stopped(STOPPED_BY_SIGTERM)

    def __enter__(self) -> SigtermGuard:
        return self

    def __exit__(self, *exc_info) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous)
            self._installed = False
        self._raising = False
