"""The comparison of bench/chaos_search.py, on plain records: agreeing ones pass, and each kind
of disagreement a killed and resumed search could leave behind is reported. No Ray, no search."""

from __future__ import annotations

import copy
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "chaos_search.py"


@pytest.fixture(scope="module")
def chaos():
    spec = importlib.util.spec_from_file_location("chaos_search", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def agreeing_records() -> dict:
    """Three trials (finished, pruned after epoch 1, failed) as all four records hold them."""
    optuna_trials = [
        {"number": 0, "state": "COMPLETE", "values": [0.5], "intermediate": {1: 0.4, 2: 0.5}},
        {"number": 1, "state": "PRUNED", "values": [0.1], "intermediate": {1: 0.1}},
        {"number": 2, "state": "FAIL", "values": None, "intermediate": {}},
    ]
    for trial, lr in zip(optuna_trials, (3e-4, 8e-4, 1e-4), strict=True):
        trial["params"] = {"trees": "form", "optim.lr": lr}
    tune_trials = [
        {"trial_id": "a", "number": 0, "status": "TERMINATED", "finished": True, "value": 0.5},
        {"trial_id": "b", "number": 1, "status": "TERMINATED", "finished": False, "value": 0.1},
        {"trial_id": "c", "number": 2, "status": "ERROR", "finished": False, "value": None},
    ]
    parents = [{"run_id": "P", "status": "FINISHED"}]

    def run(number, status, outcome, value, by_epoch):
        return {
            "run_id": f"r{number}",
            "number": number,
            "parent": "P",
            "status": status,
            "outcome": outcome,
            "value": value,
            "values_by_epoch": by_epoch,
            "epoch_steps": sorted(by_epoch),
        }

    runs = [
        run(0, "FINISHED", "finished", 0.5, {0: 0.4, 1: 0.5}),
        run(1, "FINISHED", "pruned", 0.1, {0: 0.1}),
        run(2, "FAILED", "failed", None, {}),
    ]
    summary = {
        "interrupted": False,
        "trials": [
            {"number": 0, "status": "finished", "value": 0.5},
            {"number": 1, "status": "pruned", "value": 0.1},
            {"number": 2, "status": "failed", "value": None},
        ],
    }
    return {
        "optuna_trials": optuna_trials,
        "tune_trials": tune_trials,
        "parents": parents,
        "runs": runs,
        "summary": summary,
    }


def compare(chaos, records: dict) -> list[str]:
    return chaos.disagreements(**records, trials=3, epochs=2)


def test_agreeing_records_have_no_disagreement(chaos):
    assert compare(chaos, agreeing_records()) == []


def _duplicated_run(records):
    twin = copy.deepcopy(records["runs"][0])
    twin["run_id"] = "r0-again"
    records["runs"].append(twin)


def _status_mismatch(records):
    records["runs"][1]["outcome"] = "finished"


def _value_mismatch(records):
    records["optuna_trials"][0]["values"] = [0.5 + 1e-6]


def _run_left_running(records):
    records["runs"][2].update(status="RUNNING", outcome=None)


def _epoch_logged_twice(records):
    records["runs"][0]["epoch_steps"] = [0, 1, 1]


def _duplicated_tune_trial(records):
    records["tune_trials"].append({**records["tune_trials"][1], "trial_id": "d"})


def _tune_still_running(records):
    records["tune_trials"][0]["status"] = "RUNNING"


def _optuna_orphan(records):
    records["optuna_trials"].append(
        {"number": 3, "state": "RUNNING", "values": None, "intermediate": {}}
    )


def _second_parent(records):
    records["parents"].append({"run_id": "P2", "status": "KILLED"})


def _summary_twice(records):
    records["summary"]["trials"].append({"number": 0, "status": "finished", "value": 0.5})


def _summary_unfinished(records):
    records["summary"]["interrupted"] = True
    records["summary"]["trials"][1]["status"] = "unfinished"


def _repeated_sample(records):
    records["optuna_trials"][2]["params"] = dict(records["optuna_trials"][0]["params"])


def _intermediate_value_mismatch(records):
    records["runs"][0]["values_by_epoch"][0] = 0.3


@pytest.mark.parametrize(
    ("spoil", "expected"),
    [
        (_duplicated_run, "trial 0: 2 mlflow runs, not 1 (r0, r0-again)"),
        (_status_mismatch, "trial 1: mlflow run r1 tagged finished, optuna PRUNED"),
        (_value_mismatch, "trial 0: mlflow run r0: robust_leaf 0.5, optuna 0.500001"),
        (_run_left_running, "trial 2: mlflow run r2 left RUNNING"),
        (_epoch_logged_twice, "trial 0: mlflow run r0: epoch 1 logged 2 times"),
        (_duplicated_tune_trial, "trial 1: 2 tune trials (b, d)"),
        (_tune_still_running, "trial 0: tune unfinished (RUNNING), optuna COMPLETE"),
        (_optuna_orphan, "trial 3: optuna state RUNNING, not ended"),
        (_second_parent, "mlflow: 2 parent runs of the search, not 1"),
        (_summary_twice, "summary: trial 0 listed 2 times"),
        (_summary_unfinished, "summary: trial 1 unfinished, optuna PRUNED"),
        (_repeated_sample, "trial 2: sampled the same values as trial 0"),
        (
            _intermediate_value_mismatch,
            "trial 0: mlflow run r0: robust_leaf after epoch 1 is 0.3, optuna's intermediate "
            "value 0.4",
        ),
    ],
    ids=lambda value: value.__name__.strip("_") if callable(value) else "",
)
def test_each_kind_of_disagreement_is_reported(chaos, spoil, expected):
    records = agreeing_records()
    spoil(records)
    assert expected in compare(chaos, records)


def test_every_source_of_a_value_mismatch_is_named(chaos):
    records = agreeing_records()
    records["optuna_trials"][0]["values"] = [0.6]
    problems = compare(chaos, records)
    assert "trial 0: tune robust_leaf 0.5, optuna 0.6" in problems
    assert "summary: trial 0 robust_leaf 0.5, optuna 0.6" in problems


def test_values_within_the_tolerance_agree(chaos):
    records = agreeing_records()
    records["runs"][0]["value"] = 0.5 + 1e-12
    assert compare(chaos, records) == []


def test_a_missing_summary_is_a_disagreement(chaos):
    records = agreeing_records()
    records["summary"] = None
    assert compare(chaos, records) == ["summary: the last resume printed no --json summary"]


def test_loading_the_script_imports_neither_ray_nor_mlflow():
    # The collectors import them when they run; the comparison needs neither.
    code = (
        "import importlib.util, sys; "
        f"spec = importlib.util.spec_from_file_location('chaos_search', {str(BENCH)!r}); "
        "spec.loader.exec_module(importlib.util.module_from_spec(spec)); "
        "print(sorted({'ray', 'mlflow', 'optuna'} & set(sys.modules)))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == "[]"
