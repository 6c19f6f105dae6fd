"""The parts of a search that need no Ray cluster: the Optuna searcher and its study, the
epoch-based ASHA, the search's name and stores, checkpoint trimming and the progress lines."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from optuna.trial import TrialState
from ray.tune.schedulers import TrialScheduler

from raysearch.private_api import searcher_completed, searcher_trials
from raysearch.runtime import DRIVER_RESOURCE, TrialFootprint
from raysearch.search import _concurrency
from raysearch.search_callbacks import Progress, error_text, trial_status, trim_checkpoints
from raysearch.search_report import TrialRow, space_param_names
from raysearch.search_state import (
    FINISHED_KEY,
    NUMBER_KEY,
    OVERRIDES_KEY,
    optuna_storage_url,
    resolve_search_name,
    searches_folder,
    trial_job_name,
)
from raysearch.search_strategy import (
    DefineByRun,
    EpochASHA,
    StudySearch,
    build_sampler,
    build_scheduler,
)
from raysearch.spaces import load_space, space_from_dict
from trainables.errors import UserInputError

SPACES = Path(__file__).resolve().parents[2] / "search_spaces"
LR = {"optim.lr": {"type": "float", "low": 1e-4, "high": 2e-3, "log": True}}

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _space(
    storage: Path | None = None,
    *,
    name: str = "t",
    space: dict | None = None,
    budget: dict | None = None,
    objective=None,
    overrides: tuple[str, ...] = (),
):
    if storage is not None:
        overrides = (*overrides, f"checkpoint.storage_path={storage}")
    data = {
        "name": name,
        "base": "embedded-experiment.yaml",
        "overrides": list(overrides),
        "objective": objective or {"metric": "robust_leaf", "mode": "max"},
        "budget": budget or {"trials": 2},
        "space": space or LR,
    }
    return space_from_dict(data, folder=SPACES)


@pytest.fixture(scope="module")
def demo():
    return load_space(SPACES / "demo.yaml")


# -- StudySearch ----------------------------------------------------------------------------


def _define(trial) -> dict:
    """A define-by-run function at module level (the searcher's state pickles it)."""
    return {OVERRIDES_KEY: {"optim.lr": trial.suggest_float("optim.lr", 1e-4, 1e-2, log=True)}}


@pytest.fixture(scope="module")
def _empty_storage(tmp_path_factory) -> Path:
    # Creating a storage's tables takes a third of a second: once, then copy the file.
    path = tmp_path_factory.mktemp("optuna") / "empty.db"
    optuna.storages.RDBStorage(f"sqlite:///{path}").engine.dispose()
    return path


@pytest.fixture()
def study_dir(tmp_path, _empty_storage) -> Path:
    """A folder with an empty Optuna storage, ``o.db``."""
    shutil.copyfile(_empty_storage, tmp_path / "o.db")
    return tmp_path


def _url(study_dir: Path) -> str:
    return f"sqlite:///{study_dir}/o.db"


def _searcher(
    study_dir, *, space=_define, metric="robust_leaf", mode="max", sampler=None, name="s"
):
    return StudySearch(
        space=space,
        metric=metric,
        mode=mode,
        sampler=sampler or optuna.samplers.TPESampler(seed=0),
        study_name=name,
        storage=optuna.storages.RDBStorage(_url(study_dir)),
    )


def _stored(study_dir, name: str = "s") -> list:
    """The study's trials as the storage has them (a fresh read, not the searcher's view)."""
    return optuna.load_study(study_name=name, storage=_url(study_dir)).get_trials(deepcopy=True)


def test_suggest_puts_the_sample_under_overrides_and_the_trial_number_in_the_config(
    study_dir, demo
):
    searcher = _searcher(study_dir, space=DefineByRun(demo))
    configs = [searcher.suggest(trial_id) for trial_id in ("a", "b", "c")]
    assert [config[NUMBER_KEY] for config in configs] == [0, 1, 2]
    stored = _stored(study_dir)
    for config, trial in zip(configs, stored, strict=True):
        overrides = config[OVERRIDES_KEY]
        assert overrides["method.trees"] == config["trees"].split("+")
        assert overrides["optim.lr"] == config["optim.lr"] == trial.params["optim.lr"]
        # Besides the overrides, the config holds exactly what Optuna sampled.
        sampled = {k: v for k, v in config.items() if k not in (OVERRIDES_KEY, NUMBER_KEY)}
        assert sampled == trial.params
        assert trial.state == TrialState.RUNNING
        demo.config_for(overrides)  # a trial's config is built from the overrides alone


def test_intermediate_values_are_recorded_by_completed_epoch(study_dir):
    searcher = _searcher(study_dir)
    searcher.suggest("a")
    searcher.on_trial_result(
        "a", {"robust_leaf": 0.5, "epochs_completed": 1, "training_iteration": 7}
    )
    searcher.on_trial_result("a", {"robust_leaf": 0.9, "epochs_completed": 1})  # repeated epoch
    searcher.on_trial_result("a", {"clean_leaf": 0.3, "epochs_completed": 2})  # no objective
    searcher.on_trial_result("a", {"robust_leaf": math.nan, "epochs_completed": 2})
    searcher.on_trial_result("a", {"robust_leaf": 0.4, "training_iteration": 3})  # no epoch
    searcher.on_trial_result("a", {"robust_leaf": 0.6, "epochs_completed": 3})
    searcher.on_trial_result("unknown", {"robust_leaf": 0.6, "epochs_completed": 3})
    (trial,) = _stored(study_dir)
    assert trial.intermediate_values == {1: 0.5, 3: 0.6}
    assert trial.state == TrialState.RUNNING


def test_a_trial_ending_without_the_finished_key_is_pruned_at_its_last_epoch(study_dir):
    searcher = _searcher(study_dir)
    searcher.suggest("a")
    searcher.on_trial_result("a", {"robust_leaf": 0.5, "epochs_completed": 1})
    # Tune passes the result that made ASHA stop the trial only to on_trial_complete.
    searcher.on_trial_complete("a", {"robust_leaf": 0.2, "epochs_completed": 2})
    (trial,) = _stored(study_dir)
    assert trial.state == TrialState.PRUNED
    assert trial.intermediate_values == {1: 0.5, 2: 0.2}
    searcher.on_trial_result("a", {"robust_leaf": 0.7, "epochs_completed": 3})  # too late
    assert _stored(study_dir)[0].intermediate_values == {1: 0.5, 2: 0.2}


def test_a_trial_that_ran_every_epoch_completes_with_its_final_value(study_dir):
    searcher = _searcher(study_dir, mode="min", metric="loss")
    searcher.suggest("a")
    searcher.on_trial_result("a", {"loss": 2.0, "epochs_completed": 1})
    searcher.on_trial_complete("a", {"loss": 1.25, "epochs_completed": 2, FINISHED_KEY: 1})
    (trial,) = _stored(study_dir)
    assert trial.state == TrialState.COMPLETE
    assert trial.values == [1.25]
    assert optuna.load_study(study_name="s", storage=_url(study_dir)).direction.name == "MINIMIZE"


@pytest.mark.parametrize(
    ("result", "error"),
    [
        ({"robust_leaf": 0.5, FINISHED_KEY: 1}, True),  # an error wins over a final result
        (None, True),
        ({"robust_leaf": math.nan, FINISHED_KEY: 1}, False),
        ({"robust_leaf": math.inf, FINISHED_KEY: 1}, False),
        ({"clean_leaf": 0.5, FINISHED_KEY: 1}, False),  # the objective is missing
        ({"robust_leaf": "0.5", FINISHED_KEY: 1}, False),
    ],
)
def test_errors_and_unusable_final_values_fail_the_trial(study_dir, result, error):
    searcher = _searcher(study_dir)
    searcher.suggest("a")
    searcher.on_trial_complete("a", result, error=error)
    (trial,) = _stored(study_dir)
    assert trial.state == TrialState.FAIL
    assert trial.values is None


def test_two_objectives_complete_with_both_values(study_dir, demo):
    searcher = _searcher(
        study_dir,
        space=DefineByRun(demo),
        metric=["robust_leaf", "clean_leaf"],
        mode=["max", "min"],
        sampler=optuna.samplers.NSGAIISampler(seed=0),
    )
    for trial_id in ("a", "b"):
        searcher.suggest(trial_id)
    result = {"robust_leaf": 0.25, "clean_leaf": 0.75, "epochs_completed": 1}
    searcher.on_trial_result("a", result)  # Optuna keeps no intermediate values for two
    searcher.on_trial_complete("a", {**result, FINISHED_KEY: 1})
    searcher.on_trial_complete("b", {"robust_leaf": 0.5, "epochs_completed": 1})
    first, second = _stored(study_dir)
    assert first.state == TrialState.COMPLETE and first.values == [0.25, 0.75]
    assert first.intermediate_values == {}
    assert second.state == TrialState.PRUNED and second.values is None
    study = optuna.load_study(study_name="s", storage=_url(study_dir))
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]


def test_a_second_completion_of_the_same_trial_is_ignored(study_dir):
    searcher = _searcher(study_dir)
    searcher.suggest("a")
    searcher.on_trial_complete("a", {"robust_leaf": 0.5, FINISHED_KEY: 1})
    searcher.on_trial_complete("a", None, error=True)
    (trial,) = _stored(study_dir)
    assert trial.state == TrialState.COMPLETE and trial.values == [0.5]


def test_a_trial_finished_in_storage_but_running_in_a_restored_searcher_is_not_told_again(
    study_dir,
):
    # The driver saves the searcher, tells Optuna that a trial ended, and is killed before it
    # saves again: the resumed searcher believes the trial is still running.
    searcher = _searcher(study_dir)
    searcher.suggest("a")
    searcher.save(str(study_dir / "searcher.pkl"))
    searcher.on_trial_complete("a", {"robust_leaf": 0.5, FINISHED_KEY: 1})
    resumed = _searcher(study_dir)
    resumed.restore(str(study_dir / "searcher.pkl"))
    assert "a" in searcher_trials(resumed) and "a" not in searcher_completed(resumed)
    resumed.on_trial_complete("a", {"robust_leaf": 0.1, "epochs_completed": 1})  # no exception
    assert "a" in searcher_completed(resumed)
    (trial,) = _stored(study_dir)
    assert trial.state == TrialState.COMPLETE and trial.values == [0.5]
    # Copying the trials into a second searcher on the same study does the same.
    other = _searcher(study_dir)
    searcher_trials(other).update(searcher_trials(searcher))
    other.on_trial_complete("a", None, error=True)
    assert _stored(study_dir)[0].state == TrialState.COMPLETE


def test_the_searcher_state_pickles_and_restores(study_dir, demo):
    searcher = _searcher(study_dir, space=DefineByRun(demo))
    searcher.suggest("a")
    searcher.suggest("b")
    searcher.on_trial_complete("a", {"robust_leaf": 0.5, FINISHED_KEY: 1})
    searcher.on_trial_result("b", {"robust_leaf": 0.3, "epochs_completed": 1})
    searcher.save(str(study_dir / "searcher.pkl"))

    restored = _searcher(study_dir, space=DefineByRun(demo))
    restored.restore(str(study_dir / "searcher.pkl"))
    assert isinstance(restored._space, DefineByRun) and restored._space.space.name == "demo"
    trials = searcher_trials(restored)
    assert {key: trial.number for key, trial in trials.items()} == {"a": 0, "b": 1}
    assert searcher_completed(restored) == {"a"}
    restored.on_trial_result("b", {"robust_leaf": 0.4, "epochs_completed": 2})
    restored.on_trial_complete("b", {"robust_leaf": 0.45, FINISHED_KEY: 1})
    assert restored.suggest("c")[NUMBER_KEY] == 2
    first, second, third = _stored(study_dir)
    assert (first.state, second.state, third.state) == (
        TrialState.COMPLETE,
        TrialState.COMPLETE,
        TrialState.RUNNING,
    )
    assert second.intermediate_values == {1: 0.3, 2: 0.4} and second.values == [0.45]


def test_each_search_has_its_own_study_and_a_reopened_study_continues(study_dir):
    first = _searcher(study_dir, name="one")
    assert [first.suggest(t)[NUMBER_KEY] for t in ("a", "b")] == [0, 1]
    other = _searcher(study_dir, name="two")
    assert other.suggest("a")[NUMBER_KEY] == 0  # same storage, another study
    again = _searcher(study_dir, name="one")
    assert again.suggest("c")[NUMBER_KEY] == 2
    assert len(_stored(study_dir, "one")) == 3 and len(_stored(study_dir, "two")) == 1


def test_the_sampler_follows_the_number_of_objectives_and_the_seed(demo):
    single = _space(budget={"seed": 7})
    assert isinstance(build_sampler(single), optuna.samplers.TPESampler)
    assert isinstance(build_sampler(demo), optuna.samplers.NSGAIISampler)
    draws = []
    for _ in range(2):
        study = optuna.create_study(sampler=build_sampler(single))
        draws.append([study.ask().suggest_float("x", 0, 1) for _ in range(3)])
    assert draws[0] == draws[1]


# -- EpochASHA ------------------------------------------------------------------------------


class _Trial:
    """What AsyncHyperBandScheduler reads of a trial (its controller argument is unused)."""

    def __init__(self, trial_id: str):
        self.trial_id = trial_id


def _asha() -> EpochASHA:
    return EpochASHA(
        time_attr="epochs_completed",
        metric="robust_leaf",
        mode="max",
        max_t=5,
        grace_period=1,
        reduction_factor=2,
        stop_last_trials=False,
    )


def _result(value: float, epoch: int, total: int) -> dict:
    return {"robust_leaf": value, "epochs_completed": epoch, "epochs_total": total}


def _decide(scheduler, trial_id: str, result: dict) -> str:
    trial = _Trial(trial_id)
    if trial_id not in scheduler._trial_info:
        scheduler.on_trial_add(None, trial)
    return scheduler.on_trial_result(None, trial, result)


def test_asha_stops_a_trial_far_behind_before_its_last_epoch():
    scheduler = _asha()
    assert _decide(scheduler, "a", _result(0.9, 1, 3)) == TrialScheduler.CONTINUE
    assert _decide(scheduler, "b", _result(0.95, 1, 3)) == TrialScheduler.CONTINUE
    assert _decide(scheduler, "c", _result(0.1, 1, 3)) == TrialScheduler.STOP


def test_asha_never_stops_a_trial_on_its_last_epoch():
    scheduler = _asha()
    _decide(scheduler, "a", _result(0.9, 1, 3))
    _decide(scheduler, "b", _result(0.95, 1, 3))
    # The same far-behind result, but it is the trial's last epoch.
    assert _decide(scheduler, "c", _result(0.1, 1, 1)) == TrialScheduler.CONTINUE
    assert _decide(scheduler, "e", _result(0.1, 1, 2)) == TrialScheduler.STOP
    # At the second rung too.
    assert _decide(scheduler, "a", _result(0.9, 2, 3)) == TrialScheduler.CONTINUE
    assert _decide(scheduler, "b", _result(0.95, 2, 3)) == TrialScheduler.CONTINUE
    assert _decide(scheduler, "f", _result(0.1, 2, 3)) == TrialScheduler.STOP
    assert _decide(scheduler, "d", _result(0.1, 2, 2)) == TrialScheduler.CONTINUE


def test_asha_counts_epochs_not_tune_iterations():
    scheduler = _asha()
    _decide(scheduler, "a", _result(0.9, 1, 3))
    _decide(scheduler, "b", _result(0.95, 1, 3))
    # A restored trial's iteration count restarts; its epochs do not reach rung 2 yet.
    behind = {**_result(0.1, 1, 3), "training_iteration": 9}
    assert _decide(scheduler, "c", behind) == TrialScheduler.STOP
    assert _decide(scheduler, "d", {"robust_leaf": 0.1, "training_iteration": 9}) == (
        TrialScheduler.CONTINUE  # no epoch count: nothing to compare
    )


def test_build_scheduler_runs_asha_on_the_first_objective_by_epochs():
    space = _space(
        objective=[{"metric": "loss", "mode": "min"}, {"metric": "robust_leaf", "mode": "max"}],
        budget={"grace_epochs": 2, "reduction_factor": 2},
        space={"optim.epochs": {"type": "int", "low": 1, "high": 4}},
    )
    scheduler = build_scheduler(space)
    assert isinstance(scheduler, EpochASHA)
    assert (scheduler._time_attr, scheduler._metric, scheduler._mode) == (
        "epochs_completed",
        "loss",
        "min",
    )
    assert scheduler._max_t == 5  # one past the most epochs: ASHA's own stop never fires
    assert scheduler._stop_last_trials is False
    (bracket,) = scheduler._brackets
    assert [milestone for milestone, _ in bracket._rungs] == [4, 2]  # from the grace period
    assert bracket.rf == 2


def test_build_scheduler_without_early_stopping_is_none():
    assert build_scheduler(_space(budget={"scheduler": "none"})) is None


def test_a_grace_period_longer_than_every_trial_is_refused_or_harmless():
    try:
        space = _space(budget={"grace_epochs": 5})  # the base runs 2 epochs
    except UserInputError as error:
        assert str(error).startswith("`budget.grace_epochs` must be")
        return
    assert build_scheduler(space) is not None


# -- max_epochs -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("space", "overrides", "expected"),
    [
        (LR, (), 2),  # the base config's optim.epochs
        (LR, ("optim.epochs=3",), 3),
        ({"optim.epochs": {"type": "int", "low": 1, "high": 5}}, (), 5),
        ({"optim.epochs": {"type": "int", "low": 2, "high": 6, "step": 2}}, (), 6),
        ({"optim.epochs": {"type": "float", "low": 1.0, "high": 2.5}}, (), 3),
        ({"optim.epochs": {"type": "categorical", "choices": [4, 1]}}, (), 4),
        ({"optim.epochs": {"type": "fixed", "value": 7}}, (), 7),
        # Conditional: trials without it keep the base's 4 epochs.
        (
            {
                "optim.optimizer": {"type": "categorical", "choices": ["adamw", "sgd"]},
                "optim.epochs": {
                    "type": "int",
                    "low": 1,
                    "high": 3,
                    "when": {"optim.optimizer": "sgd"},
                },
            },
            ("optim.epochs=4",),
            4,
        ),
    ],
)
def test_max_epochs_is_the_most_epochs_a_trial_can_sample(space, overrides, expected):
    assert _space(space=space, overrides=overrides).max_epochs == expected


# -- where a search lives -------------------------------------------------------------------


def test_optuna_storage_sits_beside_a_sqlite_mlflow_database(tmp_path):
    url = optuna_storage_url(f"sqlite:///{tmp_path}/ml/mlflow.db", tmp_path / "searches")
    assert url == f"sqlite:///{tmp_path.resolve()}/ml/optuna.db"
    (tmp_path / "ml").mkdir()
    optuna.create_study(storage=url, study_name="x")  # a working SQLAlchemy URL
    assert (tmp_path / "ml" / "optuna.db").is_file()


def test_optuna_storage_of_a_relative_sqlite_path_is_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    url = optuna_storage_url("sqlite:///sub/mlflow.db", Path("searches"))
    assert url == f"sqlite:///{tmp_path.resolve()}/sub/optuna.db"


@pytest.mark.parametrize("uri", ["http://mlflow:5000", "https://host/x", "file:///tmp/mlruns"])
def test_optuna_storage_goes_in_the_searches_folder_for_other_tracking_uris(tmp_path, uri):
    searches = tmp_path / "r" / "searches"
    assert optuna_storage_url(uri, searches) == f"sqlite:///{searches.resolve()}/optuna.db"


def test_searches_live_under_the_checkpoint_storage_path(tmp_path):
    assert searches_folder(_space(tmp_path / "store")) == (tmp_path / "store" / "searches")
    with pytest.raises(UserInputError, match=r"^`checkpoint.storage_path` must be a folder"):
        searches_folder(_space(overrides=("checkpoint.storage_path=s3://bucket/runs",)))


def test_trial_jobs_are_named_after_the_search_and_the_trial_number():
    assert trial_job_name("demo-20250101-000000", 7) == "demo-20250101-000000-trial-007"


# -- resolve_search_name --------------------------------------------------------------------


def _started_search(searches: Path, name: str, space: str, mtime: float) -> Path:
    """A search folder as launch leaves it: the marker and Tune's saved Tuner."""
    folder = searches / name
    (folder / "tune").mkdir(parents=True)
    (folder / "tune" / "tuner.pkl").write_bytes(b"state")
    (folder / "search.json").write_text(json.dumps({"space": space}))
    os.utime(folder / "tune", (mtime, mtime))
    return folder


def test_a_new_search_is_named_after_the_space_and_the_time(tmp_path):
    space = _space(tmp_path, name="demo")
    name = resolve_search_name(space, None, resume=False)
    assert re.fullmatch(r"demo-\d{8}-\d{6}", name)
    stamp = time.strptime(name.removeprefix("demo-"), "%Y%m%d-%H%M%S")
    assert abs(time.mktime(stamp) - time.time()) < 120


def test_two_searches_started_within_a_second_get_different_names(tmp_path, monkeypatch):
    space = _space(tmp_path, name="demo")
    monkeypatch.setattr("raysearch.search_state.time.strftime", lambda fmt: "20250102-030405")
    searches = tmp_path / "searches"
    assert resolve_search_name(space, None, resume=False) == "demo-20250102-030405"
    (searches / "demo-20250102-030405").mkdir(parents=True)
    assert resolve_search_name(space, None, resume=False) == "demo-20250102-030405-2"
    (searches / "demo-20250102-030405-2").mkdir()
    assert resolve_search_name(space, None, resume=False) == "demo-20250102-030405-3"


def test_a_given_name_must_be_new_without_resume(tmp_path):
    space = _space(tmp_path)
    assert resolve_search_name(space, "fresh", resume=False) == "fresh"
    (tmp_path / "searches" / "taken").mkdir(parents=True)
    with pytest.raises(UserInputError, match=r"^`--name` must be a new search name \(taken"):
        resolve_search_name(space, "taken", resume=False)


@pytest.mark.parametrize("name", ["..", ".", ".tune"])
def test_a_given_name_that_leaves_the_searches_folder_is_refused(tmp_path, name):
    space = _space(tmp_path)
    with pytest.raises(UserInputError, match=r"^`--name` must be 1 to 64 characters"):
        resolve_search_name(space, name, resume=False)
    assert not (tmp_path / "searches").exists()


def test_resume_needs_a_started_search(tmp_path):
    space = _space(tmp_path, name="mine")
    with pytest.raises(UserInputError, match=r"^`--resume` must be used after a search of mine"):
        resolve_search_name(space, None, resume=True)
    # Folders that Tune never saved state in, or of another space, do not count.
    (tmp_path / "searches" / "mine-unstarted" / "tune").mkdir(parents=True)
    (tmp_path / "searches" / "mine-unstarted" / "search.json").write_text('{"space": "mine"}')
    _started_search(tmp_path / "searches", "theirs", "other", time.time())
    with pytest.raises(UserInputError, match=r"^`--resume` must be used after a search of mine"):
        resolve_search_name(space, None, resume=True)
    with pytest.raises(UserInputError, match=r"^`--name` must be a started search"):
        resolve_search_name(space, "mine-unstarted", resume=True)


def test_resume_picks_the_latest_started_search_of_this_space(tmp_path):
    space = _space(tmp_path, name="mine")
    searches = tmp_path / "searches"
    now = time.time()
    _started_search(searches, "mine-old", "mine", now - 300)
    _started_search(searches, "mine-latest", "mine", now - 100)
    _started_search(searches, "mine-older", "mine", now - 200)
    _started_search(searches, "theirs", "other", now)
    (searches / "broken").mkdir()  # no marker: skipped
    assert resolve_search_name(space, None, resume=True) == "mine-latest"
    assert resolve_search_name(space, "mine-old", resume=True) == "mine-old"


@pytest.mark.parametrize("name", ["bad name!", "", "a" * 65, "x/y", "../up"])
def test_invalid_search_names_are_refused(tmp_path, name):
    space = _space(tmp_path)
    for resume in (False, True):
        with pytest.raises(UserInputError, match=r"^`--name` must be 1 to 64 characters"):
            resolve_search_name(space, name, resume=resume)


def test_a_generated_search_name_can_be_given_back_to_resume(tmp_path):
    space = _space(tmp_path, name="s" * 60)
    name = resolve_search_name(space, None, resume=False)
    _started_search(tmp_path / "searches", name, space.name, time.time())
    assert resolve_search_name(space, name, resume=True) == name


# -- checkpoints, concurrency, rows ---------------------------------------------------------


def test_trim_checkpoints_keeps_the_newest_ones(tmp_path):
    job = tmp_path / "job"
    names = [f"checkpoint_2025-01-0{day}_10-00-00.000000" for day in (3, 1, 4, 2)]
    for name in names:
        (job / name).mkdir(parents=True)
        (job / name / "model.pt").write_bytes(b"x")
    (job / "checkpoint_notes").write_text("a file, not a checkpoint")
    (job / "result.json").write_text("{}")
    trim_checkpoints(job, 2)
    assert sorted(p.name for p in job.iterdir()) == [
        "checkpoint_2025-01-03_10-00-00.000000",
        "checkpoint_2025-01-04_10-00-00.000000",
        "checkpoint_notes",
        "result.json",
    ]
    trim_checkpoints(job, 5)  # fewer than kept: nothing goes
    assert len(list(job.glob("checkpoint_2025*"))) == 2
    trim_checkpoints(job, 0)
    assert not list(job.glob("checkpoint_2025*"))
    trim_checkpoints(tmp_path / "missing", 1)  # a job that never saved one


@pytest.mark.parametrize(("concurrency", "expected"), [("auto", 4), (1, 1), (3, 3), (16, 4)])
def test_concurrency_is_capped_by_what_the_cluster_holds(concurrency, expected):
    space = _space(budget={"concurrency": concurrency})
    cluster = {"CPU": 8.0, DRIVER_RESOURCE: 64.0}
    assert _concurrency(space, TrialFootprint(2, 1.0, 0.0), cluster) == expected


def _tune_trial(number: int, status: str, result: dict | None = None, **config):
    return SimpleNamespace(
        trial_id=f"id{number}",
        status=status,
        last_result=result,
        config={NUMBER_KEY: number, OVERRIDES_KEY: {}, **config},
    )


def test_trial_status_from_tunes_status_and_the_finished_key():
    assert trial_status(_tune_trial(0, "TERMINATED", {FINISHED_KEY: 1})) == "finished"
    assert trial_status(_tune_trial(0, "TERMINATED", {"epochs_completed": 1})) == "pruned"
    assert trial_status(_tune_trial(0, "TERMINATED", None)) == "pruned"
    assert trial_status(_tune_trial(0, "ERROR", {FINISHED_KEY: 1})) == "failed"
    for status in ("RUNNING", "PENDING", "PAUSED"):
        assert trial_status(_tune_trial(0, status, {FINISHED_KEY: 1})) == "unfinished"


def test_param_names_follow_the_space_file_with_depths_by_tree(demo):
    rows = [
        TrialRow(0, "a", "finished", params={"optim.lr": 1, "zz": 1, "depth.corners": 1}),
        TrialRow(1, "b", "finished", params={"trees": "form", "depth.form": 2, "aa": 1}),
        TrialRow(2, "c", "pruned", params={"loss.margins.shape": "theorem"}),
    ]
    assert space_param_names(demo, rows) == [
        "trees",
        "depth.form",
        "depth.corners",
        "loss.margins.shape",
        "optim.lr",
        "aa",
        "zz",
    ]


def test_progress_prints_one_line_per_event_with_a_running_tally(demo):
    # The demo trades zero-shot robustness (first) against clean accuracy, both validation.
    lines: list[str] = []
    progress = Progress(demo, total=4, out=lines.append)
    running = _tune_trial(0, "RUNNING", {"zeroshot_robust": 0.5, "epochs_completed": 1})
    done = _tune_trial(1, "RUNNING", {"zeroshot_robust": 0.75, "clean_leaf": 0.5, FINISHED_KEY: 1})
    pruned = _tune_trial(2, "RUNNING", {"zeroshot_robust": 0.125, "epochs_completed": 1})
    trials = [running, done, pruned]
    progress.on_trial_result(
        0,
        trials,
        running,
        {"zeroshot_robust": 0.5, "epochs_completed": 1, "epochs_total": 2, "clean_leaf": 0.25},
    )
    progress.on_trial_result(0, trials, done, {FINISHED_KEY: 1, "zeroshot_robust": 0.75})
    progress.on_trial_complete(0, trials, done)
    done.status = "TERMINATED"
    progress.on_trial_complete(0, trials, pruned)
    text = [line.split("] ", 1)[1] for line in lines]
    assert all(re.match(r"\[\d\d:\d\d\] ", line) for line in lines)
    assert text == [
        "trial 0 epoch 1/2: zeroshot_robust 0.500, clean_leaf 0.250",
        "trial 1 finished: zeroshot_robust 0.750, clean_leaf 0.500",
        "1/4 done (1 finished, 0 pruned, 0 failed), 2 running; "
        "best zeroshot_robust 0.750 (trial 1)",
        "trial 2 pruned by ASHA after epoch 1: zeroshot_robust 0.125",
        "2/4 done (1 finished, 1 pruned, 0 failed), 1 running; "
        "best zeroshot_robust 0.750 (trial 1)",
    ]


# -- how trials ended, as recorded ---------------------------------------------------------------


class _Run:
    def __init__(self, tags):
        self.data = type("Data", (), {"tags": tags})()


class _TuneTrial:
    def __init__(self, status):
        self.status = status


@pytest.mark.parametrize(
    ("tune_status", "tags", "expected"),
    [
        ("TERMINATED", {"raysearch.status": "finished"}, "finished"),
        ("TERMINATED", {"raysearch.status": "pruned"}, "pruned"),
        ("ERROR", {"raysearch.status": "failed"}, "failed"),
        # Ctrl-C: Tune marks the trials it stops TERMINATED without calling back.
        ("TERMINATED", {}, "unfinished"),
        ("RUNNING", {}, "unfinished"),
        ("ERROR", {}, "failed"),
    ],
)
def test_a_trial_ended_only_when_its_run_records_how(tune_status, tags, expected):
    from raysearch.search_callbacks import recorded_status

    assert recorded_status(_TuneTrial(tune_status), _Run(tags)) == expected
    if not tags:
        assert recorded_status(_TuneTrial(tune_status), None) == expected


def test_a_restored_search_takes_over_the_trials_a_killed_driver_left_running(study_dir):
    before = _searcher(study_dir)
    first = before.suggest("t0")
    before.save(str(study_dir / "searcher.pkl"))  # Tune's last save knew trial 0 only
    lost = before.suggest("t1")  # asked, its run maybe started, then the driver was killed

    after = _searcher(study_dir)
    after.restore(str(study_dir / "searcher.pkl"))
    again = after.suggest("t1-after-resume")
    assert again[NUMBER_KEY] == lost[NUMBER_KEY] == 1  # same number: same job and MLflow run
    assert again[OVERRIDES_KEY] == lost[OVERRIDES_KEY]  # and the same sampled values
    assert after.suggest("t2")[NUMBER_KEY] == 2  # then new trials as usual
    after.on_trial_complete("t1-after-resume", {"robust_leaf": 0.5, FINISHED_KEY: 1})
    states = {trial.number: trial.state.name for trial in _stored(study_dir)}
    assert states == {0: "RUNNING", 1: "COMPLETE", 2: "RUNNING"}
    assert first[NUMBER_KEY] == 0


# -- resuming after an unclean kill -----------------------------------------------------------


def _learning_rate_only(trial):
    from raysearch.search_state import OVERRIDES_KEY

    return {OVERRIDES_KEY: {"optim.lr": trial.suggest_float("optim.lr", 1e-4, 1e-2, log=True)}}


def test_a_trial_asked_after_the_last_save_does_not_make_the_next_one_draw_its_values(tmp_path):
    # The driver asks Optuna for a trial after the searcher's last save and is killed: the
    # resumed searcher takes that trial over, and the next new trial must not replay its draw.
    from raysearch.search_state import NUMBER_KEY
    from raysearch.search_strategy import StudySearch

    url = f"sqlite:///{tmp_path / 'optuna.db'}"

    def searcher():
        return StudySearch(
            space=_learning_rate_only,
            metric="robust_leaf",
            mode="max",
            sampler=optuna.samplers.TPESampler(seed=0),
            study_name="s",
            storage=optuna.storages.RDBStorage(url),
        )

    first = searcher()
    first.suggest("a")
    first.save(str(tmp_path / "searcher.pkl"))
    orphan = first.suggest("b")
    resumed = searcher()
    resumed.restore(str(tmp_path / "searcher.pkl"))
    adopted = resumed.suggest("b-again")
    fresh = resumed.suggest("c")
    assert (adopted[NUMBER_KEY], adopted["optim.lr"]) == (orphan[NUMBER_KEY], orphan["optim.lr"])
    assert fresh[NUMBER_KEY] == orphan[NUMBER_KEY] + 1
    assert fresh["optim.lr"] != orphan["optim.lr"]


def _run(status_tag: str | None, run_status: str, **tags: str):
    all_tags = {**({"raysearch.status": status_tag} if status_tag else {}), **tags}
    return SimpleNamespace(
        info=SimpleNamespace(status=run_status, run_id="r1"),
        data=SimpleNamespace(tags=all_tags, metrics={"robust_leaf": 0.5}),
    )


def test_a_resumed_trial_whose_run_ended_ends_again_as_it_did_without_training():
    from raysearch.search_state import FINISHED_KEY
    from raysearch.search_trial import _ended, _ended_result

    assert not _ended(None)
    assert not _ended(_run(None, "RUNNING"))  # cut off mid-job: it trains on
    assert not _ended(_run("failed", "FAILED"))
    finished = _run(None, "FINISHED")  # its job closed the run; its node died before the report
    assert _ended(finished) and _ended_result(finished)[FINISHED_KEY] == 1
    pruned = _run("pruned", "RUNNING", **{"raysearch.pruned_after_epochs": "2"})
    assert _ended(pruned)  # tagged by the driver before a kill: pruned again, not trained on
    result = _ended_result(pruned)
    assert FINISHED_KEY not in result and result["epochs_completed"] == 2
    assert result["robust_leaf"] == 0.5 and result["mlflow_run_id"] == "r1"


def _unreadable():
    raise OSError("error.pkl is gone")


@pytest.mark.parametrize(
    ("get_error", "text"),
    [
        (lambda: None, "Ray recorded no error: its process or node died"),
        (_unreadable, "the trial failed (its error could not be read)"),
        (
            lambda: RuntimeError("Traceback ...\n  File x\nValueError:   lr   must be > 0"),
            "ValueError: lr must be > 0",
        ),
    ],
)
def test_a_failed_trial_is_explained_in_one_line(get_error, text):
    assert error_text(SimpleNamespace(get_error=get_error)) == text
