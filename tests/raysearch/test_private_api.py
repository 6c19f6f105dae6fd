"""Every private Ray and Optuna attribute raysearch uses, on real objects of the installed
versions: an upgrade that moves one fails here, naming it."""

from __future__ import annotations

import os

import optuna
import pytest
from ray import tune
from ray.tune.search.optuna import OptunaSearch

from raysearch import private_api
from raysearch.private_api import PrivateApiChanged


def test_a_missing_attribute_is_reported_with_its_name_and_the_installed_version():
    with pytest.raises(PrivateApiChanged, match=r"ResultGrid\._experiment_analysis .* ray \d"):
        private_api.result_grid_trials(object())
    with pytest.raises(PrivateApiChanged, match=r"OptunaSearch\._ot_trials"):
        private_api.searcher_trials(object())
    with pytest.raises(PrivateApiChanged, match=r"object\._trial_id .* optuna \d"):
        private_api.optuna_trial_id(object())


def test_the_result_grid_keeps_its_tune_trials():
    from ray.tune import ResultGrid

    class Analysis:  # what Tune hands a ResultGrid: its trials
        trials: list = []

    assert private_api.result_grid_trials(ResultGrid(Analysis())) == []


def test_a_tuner_exposes_the_run_config_it_will_run_with(tmp_path):
    run_config = tune.RunConfig(name="probe", storage_path=str(tmp_path), verbose=0)
    tuner = tune.Tuner(lambda config: None, run_config=run_config)
    local = private_api.local_tuner_run_config(tuner)
    assert local.name == "probe"
    local.verbose = 2  # edited in place, as a resumed search does
    assert private_api.local_tuner_run_config(tuner).verbose == 2


def test_optuna_search_keeps_its_trials_study_and_completed_set(tmp_path):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}")

    def space(trial):
        trial.suggest_float("x", 0.0, 1.0)

    searcher = OptunaSearch(
        space=space, metric="m", mode="max", study_name="probe", storage=storage
    )
    searcher.suggest("a")
    trials = private_api.searcher_trials(searcher)
    study = private_api.searcher_study(searcher)
    assert set(trials) == {"a"} and isinstance(study, optuna.Study)
    assert private_api.searcher_completed(searcher) == set()
    searcher.on_trial_complete("a", {"m": 1.0})
    assert private_api.searcher_completed(searcher) == {"a"}
    # The storage id of a Trial and of the FrozenTrial the study returns for it agree.
    (frozen,) = study.get_trials(deepcopy=False)
    assert private_api.optuna_trial_id(trials["a"]) == private_api.optuna_trial_id(frozen)
    assert storage.get_trial(private_api.optuna_trial_id(frozen)).number == frozen.number


def test_multi_node_mode_is_turned_off_in_the_environment_and_the_imported_constant(
    monkeypatch,
):
    from ray._private import ray_constants

    variable = ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR
    monkeypatch.setenv(variable, "1")
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", True)
    private_api.turn_off_multi_node()
    assert os.environ[variable] == "0" and ray_constants.ENABLE_RAY_CLUSTER is False
