from __future__ import annotations

import pytest

from trainables.compare import CompareSettings, run_compare, summarise, table_columns
from trainables.errors import UserInputError
from trainables.evaluate import AttackSettings
from trainables.training import OptimSettings


def test_smoke_compare_fine_tunes_and_profiles_each_method(base_model, forest, embedded):
    settings = CompareSettings(
        methods=("clip", "tecoa", "hrz-forest"),
        seeds=(0,),
        optim=OptimSettings(batch_size=32, max_steps=2, warmup_steps=1),
        evaluation=AttackSettings(eps=4 / 255, steps=2),
        eval_samples=40,
        train_size=64,
    )
    results = run_compare(settings, base=base_model.loaded, forest=forest, dataset=embedded)
    rows = {row["method"]: row for row in results["rows"]}
    assert list(rows) == ["clip", "tecoa", "hrz-forest"]
    assert rows["clip"]["train"]["steps"] == 0 and rows["tecoa"]["train"]["steps"] == 2
    for row in rows.values():
        profile = row["profile"]
        assert profile["settings"]["samples"] == 40
        assert set(profile["superclass_attacks"]) == set(forest.names)
        assert profile["robust_leaf"] <= profile["clean_leaf"]
    # Every method starts from the same base: the base model itself is never trained.
    base_rows = run_compare(
        CompareSettings(
            methods=("clip",),
            seeds=(0,),
            evaluation=AttackSettings(eps=4 / 255, steps=2),
            eval_samples=40,
        ),
        base=base_model.loaded,
        forest=forest,
        dataset=embedded,
    )["rows"]
    assert base_rows[0]["profile"] == rows["clip"]["profile"]


def test_summary_reports_mean_and_spread_over_seeds():
    def row(method, seed, value):
        profile = {
            "clean_leaf": value,
            "robust_leaf": value / 2,
            "superclass_attacks": {"t": {1: {"level": value, "leaf": value}}},
            "transfer": value,
        }
        return {"method": method, "seed": seed, "profile": profile}

    summary = summarise([row("a", 0, 0.5), row("a", 1, 0.7)])
    assert summary["a"]["clean leaf"]["mean"] == pytest.approx(0.6)
    assert summary["a"]["clean leaf"]["std"] == pytest.approx(0.1)
    assert summary["a"]["robust leaf"]["n"] == 2
    assert list(table_columns(row("a", 0, 0.5)["profile"])) == [
        "clean leaf",
        "robust leaf",
        "t/1 level",
        "t/1 leaf",
        "transfer",
    ]


def test_bad_compare_settings_are_refused():
    with pytest.raises(UserInputError, match="`methods` must be"):
        CompareSettings(methods=("clip", "madry"))
    with pytest.raises(UserInputError, match="`seeds` must be"):
        CompareSettings(seeds=())
