"""Where a search lives and how its parts are named: folders, the Optuna storage, the search's
name, its trials' job names, and the keys a trial's config and results carry."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from ray import tune

from raysearch.spaces import SearchSpace
from raysearch.tracking import sqlite_file
from trainables.errors import must
from trainables.names import check_folder_name
from trainables.outputs import check_output_folder

#: Keys of a trial's Tune config besides the sampled parameters.
OVERRIDES_KEY = "overrides"
NUMBER_KEY = "optuna_trial"
#: Reported once by a trial that ran all its epochs (absent: stopped early, or failed).
FINISHED_KEY = "trial_finished"
SEARCHES_FOLDER = "searches"
OPTUNA_FILE = "optuna.db"
REPORT_FOLDER = "report"


# -- where a search lives -----------------------------------------------------------------------


@dataclass(frozen=True)
class SearchPaths:
    """The folders and stores of one search.

    Attributes:
        root: ``<storage_path>/searches/<name>``: Tune's state, the trials' Train jobs, the report.
        optuna_url: the study's storage (SQLite beside the MLflow database when that is local).
    """

    root: Path
    optuna_url: str

    @property
    def tune(self) -> Path:
        return self.root / "tune"

    @property
    def jobs(self) -> Path:
        return self.root / "jobs"

    @property
    def report(self) -> Path:
        return self.root / REPORT_FOLDER


def searches_folder(space: SearchSpace) -> Path:
    storage = space.base.checkpoint.resolved_storage_path()
    if "://" in storage:
        raise must(
            "checkpoint.storage_path",
            "a folder for a search (Tune's own state is kept locally; a shared file system "
            "mounted on every node works on a cluster)",
            storage,
        )
    return check_output_folder(storage, "checkpoint.storage_path") / SEARCHES_FOLDER


def optuna_storage_url(tracking_uri: str, searches: Path) -> str:
    """Beside a local MLflow database; in the searches folder for a remote tracking server."""
    database = sqlite_file(tracking_uri)
    if database is not None:
        return f"sqlite:///{database.expanduser().resolve().parent / OPTUNA_FILE}"
    return f"sqlite:///{searches.resolve() / OPTUNA_FILE}"


MARKER_FILE = "search.json"


def _started(folder: Path) -> bool:
    return (folder / "tune").is_dir() and tune.Tuner.can_restore(str(folder / "tune"))


def _space_of(folder: Path) -> str | None:

    try:
        marker = json.loads((folder / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return None
    return marker.get("space") if isinstance(marker, dict) else None


def resolve_search_name(space: SearchSpace, name: str | None, resume: bool) -> str:
    """The search's name: ``--name``, or ``<space name>-<date>-<time>`` for a new search and
    the latest started search of this space for ``--resume``."""
    searches = searches_folder(space)
    if name is not None:
        check_folder_name(name, "--name")
        started = _started(searches / name)
        if resume and not started:
            raise must("--name", f"a started search in {searches} to resume", name)
        if not resume and (searches / name).exists():
            raise must(
                "--name", f"a new search name ({name} exists: add --resume to continue it)", name
            )
        return name
    if resume:
        candidates = sorted(
            (
                folder
                for folder in searches.glob("*")
                if _space_of(folder) == space.name and _started(folder)
            ),
            key=lambda folder: (folder / "tune").stat().st_mtime,
        )
        if not candidates:
            raise must("--resume", f"used after a search of {space.name} started", "none found")
        return candidates[-1].name
    stamp = time.strftime("%Y%m%d-%H%M%S")
    prefix = space.name[:44]  # the name stays within the 64 characters `--name` accepts
    name = f"{prefix}-{stamp}"
    suffix = 1
    while (searches / name).exists():  # two launches within one second
        suffix += 1
        name = f"{prefix}-{stamp}-{suffix}"
    return name


def trial_job_name(search: str, number: int) -> str:
    return f"{search}-trial-{number:03d}"
