"""Checks of an MLflow store before MLflow opens it, so that no command creates, changes or
migrates a store it should not, and an unreachable one fails in seconds with one line.

The commands that only use a store (inspect, ui, promote, predict, evaluate) open it with
:func:`open_store`, which refuses what MLflow would otherwise turn into a store: a missing
SQLite file, a file that is not an MLflow database, a database at another schema version. Jobs
and searches check theirs with :func:`check_store_for_writing` before Ray starts.
"""

from __future__ import annotations

import os
import re
import sqlite3
from pathlib import Path
from urllib.parse import urlsplit

from raysearch.tracking import client, sqlite_file
from trainables.errors import UserInputError, must
from trainables.outputs import check_output_file
from trainables.readers import exists

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
    try:
        scheme = urlsplit(uri).scheme.lower() if "://" in uri else ""
    except ValueError:  # a malformed host, such as http://[::1
        raise must(field, ACCEPTED_URIS, uri) from None
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


def check_store_for_writing(uri: str, *, field: str = "mlflow.tracking_uri") -> None:
    """Refuse (one line, nothing written) a store a job or search cannot log to: a URI of an
    unsupported kind, a SQLite file that exists but is not an MLflow store at this MLflow's
    schema, or a new SQLite file whose folder cannot be created. Called before Ray starts."""
    if uri_kind(uri, field=field) != "sqlite":
        return
    path = sqlite_file(uri)
    if not exists(path):  # a new store, made with the first run
        check_output_file(path, field)
        return
    check_sqlite_store(uri, field=field)
    if not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK | os.X_OK):
        # SQLite writes a journal beside the database.
        raise must(field, "an MLflow store you can write (the file and its folder)", str(path))


def check_sqlite_store(uri: str, *, field: str = "--tracking-uri") -> None:
    """The SQLite file of ``uri`` exists and is an MLflow store MLflow opens without writing:
    an SQLite database (its header, its size) with MLflow's tables at this MLflow's schema.
    Read with a read-only connection; the file is left as it was."""
    path = sqlite_file(uri)
    if not exists(path):
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
