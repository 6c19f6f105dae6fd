"""A job's checkpoint folders, kept by the training loop itself when Ray Train does not keep them.

A job whose one worker runs in the calling process, without Ray Train
(:func:`trainables.loop.run_in_process`), saves every epoch's checkpoint into the job's folder
with :func:`save_checkpoint` and resumes from :func:`latest_checkpoint`. The folders are named
``checkpoint_epoch_<epoch>`` (zero-padded, so names sort by epoch) and appear whole or not at
all: each is written under a hidden name and renamed, so a process killed while saving leaves
the previous checkpoint as the latest.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

#: The files of a checkpoint folder: the training state to resume from, and (after the last
#: epoch) the robustness profile of the validation split.
STATE_FILE = "state.pt"
PROFILE_FILE = "profile.json"
PREFIX = "checkpoint_epoch_"
_PARTIAL = ".partial-"


def checkpoint_name(epoch: int) -> str:
    return f"{PREFIX}{epoch:06d}"


def saved_checkpoints(job_folder: Path) -> list[Path]:
    """The job's complete checkpoints, oldest first."""
    if not job_folder.is_dir():
        return []
    return sorted(
        path for path in job_folder.iterdir() if path.name.startswith(PREFIX) and path.is_dir()
    )


def latest_checkpoint(job_folder: Path) -> Path | None:
    """The job's newest complete checkpoint, or None before its first epoch ended."""
    saved = saved_checkpoints(job_folder)
    return saved[-1] if saved else None


def save_checkpoint(source: Path, job_folder: Path, epoch: int, keep: int) -> Path:
    """Copy the folder ``source`` in as the checkpoint of ``epoch``; keep the ``keep`` newest.

    Returns the checkpoint's folder. Saving an epoch again (a job resumed from an older
    checkpoint) replaces it.
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1, but got {keep}")
    job_folder.mkdir(parents=True, exist_ok=True)
    target = job_folder / checkpoint_name(epoch)
    partial = job_folder / f"{_PARTIAL}{target.name}"
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(source, partial)
    if target.exists():
        shutil.rmtree(target)
    os.replace(partial, target)
    for old in saved_checkpoints(job_folder)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return target
