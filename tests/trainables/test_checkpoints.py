"""The checkpoints a training loop keeps itself (Ray Train's local mode)."""

from __future__ import annotations

import pytest

from trainables.checkpoints import (
    checkpoint_name,
    latest_checkpoint,
    save_checkpoint,
    saved_checkpoints,
)


def _source(tmp_path, text: str):
    folder = tmp_path / f"source-{text}"
    folder.mkdir()
    (folder / "state.pt").write_text(text)
    return folder


def test_a_new_job_has_no_checkpoint(tmp_path):
    assert latest_checkpoint(tmp_path / "never-started") is None
    assert latest_checkpoint(tmp_path) is None


def test_the_latest_is_the_highest_epoch_and_only_the_newest_are_kept(tmp_path):
    job = tmp_path / "job"
    for epoch in (0, 1, 2, 9, 10):  # 10 sorts after 9: names are zero-padded
        saved = save_checkpoint(_source(tmp_path, str(epoch)), job, epoch, keep=2)
        assert saved == job / checkpoint_name(epoch)
        assert (saved / "state.pt").read_text() == str(epoch)
    assert [path.name for path in saved_checkpoints(job)] == [
        checkpoint_name(9),
        checkpoint_name(10),
    ]
    assert latest_checkpoint(job) == job / checkpoint_name(10)


def test_a_checkpoint_cut_off_while_saving_is_never_the_latest(tmp_path):
    job = tmp_path / "job"
    save_checkpoint(_source(tmp_path, "0"), job, 0, keep=2)
    # What a process killed during the copy of epoch 1 leaves behind.
    partial = job / f".partial-{checkpoint_name(1)}"
    partial.mkdir()
    (partial / "state.pt").write_text("half")
    assert latest_checkpoint(job) == job / checkpoint_name(0)
    # The next save of that epoch replaces the leftover.
    save_checkpoint(_source(tmp_path, "1"), job, 1, keep=2)
    assert not partial.exists()
    assert (latest_checkpoint(job) / "state.pt").read_text() == "1"


def test_saving_an_epoch_again_replaces_it(tmp_path):
    job = tmp_path / "job"
    save_checkpoint(_source(tmp_path, "first"), job, 3, keep=1)
    save_checkpoint(_source(tmp_path, "again"), job, 3, keep=1)
    (only,) = saved_checkpoints(job)
    assert (only / "state.pt").read_text() == "again"


def test_keep_must_be_at_least_one(tmp_path):
    with pytest.raises(ValueError, match="keep must be >= 1, but got 0"):
        save_checkpoint(_source(tmp_path, "x"), tmp_path / "job", 0, keep=0)
