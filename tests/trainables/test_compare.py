from __future__ import annotations

import math

import pytest

from trainables.compare import (
    ENTRIES,
    LEARNING_RATES,
    CompareSettings,
    entry_settings,
    run_compare,
)
from trainables.compare_claims import (
    claims,
    interval,
    paired_difference,
    summarise,
    t_quantile,
    table_columns,
)
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
        suite_samples=16,
        check_samples=12,
        autoattack_steps=2,
        square_queries=10,
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
        zero_shot = row["zeroshot"]
        assert zero_shot["split"] == "test" and len(zero_shot["datasets"]) == 4
        checks = row["checks"]  # one seed: it is the first, so every method is checked
        assert checks["samples"] == 12
        assert set(checks["autoattack"]) == {"leaf", "form/1", "form/2", "form/3"} | {
            f"{tree}/{level}" for tree in ("symmetry", "corners") for level in (1, 2)
        }
        assert {"pgd", "square", "worst_case", "problems"} <= set(checks["strength"])
        assert 0 <= checks["zeroshot_autoattack"]["average"] <= 1
    assert rows["tecoa"]["lr"] == LEARNING_RATES["tecoa"]
    assert rows["hrz-forest"]["lr"] == LEARNING_RATES["hrz-forest"]
    assert results["settings"]["split"].startswith("test")
    assert results["settings"]["protocol"].startswith("equal budget")
    verdicts = {claim["claim"][:3]: claim["verdict"] for claim in results["claims"]}
    assert set(verdicts) == {"(a)", "(b)", "(c)", "(d)", "(e)"}
    assert verdicts["(d)"].startswith("not measured")  # hrz was not run


def test_variants_change_only_what_their_name_says():
    assert set(ENTRIES) >= {"hrz-forest+margins", "hrz-forest/leaf-attack"}
    paper = entry_settings("hrz-forest")
    assert paper.loss.margins.base == 0.0  # the paper's implicit margins are the default
    margins = entry_settings("hrz-forest+margins")
    assert margins.loss.margins.base > 0 and margins.loss.margins.shape == "theorem"
    assert margins.attack == paper.attack and margins.head == paper.head
    per_level = entry_settings("hrz-forest/per-level-attack")
    assert per_level.attack.strategy == "per_level" and per_level.loss == paper.loss


def test_each_row_trains_at_its_methods_validation_selected_rate():
    settings = CompareSettings()
    assert settings.lr_of("pmg") == LEARNING_RATES["pmg"]
    # A variant is an ablation of its method: same rate.
    for variant in ("hrz-forest+margins", "hrz-forest/per-level-attack"):
        assert settings.lr_of(variant) == LEARNING_RATES["hrz-forest"]
    one_rate = CompareSettings(learning_rates=None, optim=OptimSettings(lr=3e-4))
    assert {one_rate.lr_of(name) for name in ENTRIES} == {3e-4}
    partial = CompareSettings(learning_rates={"fare": 1e-4}, optim=OptimSettings(lr=3e-4))
    assert partial.lr_of("fare") == 1e-4 and partial.lr_of("tecoa") == 3e-4


def test_intervals_use_the_student_t_quantile():
    assert t_quantile(0.95, 4) == pytest.approx(2.776, abs=1e-3)
    values = [0.5, 0.6, 0.7, 0.4, 0.8]
    stats = interval(values)
    std = math.sqrt(sum((v - 0.6) ** 2 for v in values) / 4)  # sample std (n - 1)
    assert stats["mean"] == pytest.approx(0.6) and stats["std"] == pytest.approx(std)
    assert stats["ci95"] == pytest.approx(2.776 * std / math.sqrt(5), rel=1e-3)
    assert math.isnan(interval([0.5])["ci95"])


def _row(method, seed, clean, robust, zs_clean, zs_robust, seconds=10.0):
    return {
        "method": method,
        "seed": seed,
        "profile": {
            "clean_leaf": clean,
            "robust_leaf": robust,
            "superclass_attacks": {"t": {1: {"level": clean, "leaf": robust}}},
            "transfer": robust,
        },
        "zeroshot": {
            "average": {"clean": zs_clean, "robust": zs_robust},
            "datasets": {"d": {"clean": zs_clean, "robust": zs_robust}},
        },
        "train": {"seconds": seconds},
    }


def test_summary_and_paired_differences_over_seeds():
    rows = [_row("a", s, 0.5 + 0.1 * s, 0.2, 0.6, 0.3) for s in range(3)]
    rows += [_row("b", s, 0.4 + 0.1 * s, 0.2, 0.6, 0.3) for s in range(3)]
    summary = summarise(rows)
    assert summary["a"]["clean leaf"]["mean"] == pytest.approx(0.6)
    assert summary["a"]["zeroshot robust"]["n"] == 3
    assert list(table_columns(rows[0]))[:5] == [
        "clean leaf",
        "robust leaf",
        "t/1 level",
        "t/1 leaf",
        "transfer",
    ]
    # Paired by seed, a - b is exactly 0.1 every time: a zero-width interval.
    difference = paired_difference(rows, "a", "b", "clean leaf")
    assert difference["mean"] == pytest.approx(0.1) and difference["ci95"] == pytest.approx(0)
    assert paired_difference(rows, "a", "missing", "clean leaf") is None


def test_claims_hold_are_contradicted_or_unresolved_by_the_interval():
    rows = []
    for seed in range(5):
        jitter = 0.01 * (seed - 2)
        rows += [
            _row("clip", seed, 0.97, 0.05, 0.90, 0.10),
            _row("tecoa", seed, 0.95, 0.60, 0.70 + jitter, 0.40 + jitter),
            _row("hrz", seed, 0.96, 0.62, 0.80 + jitter, 0.45),
            _row("hrz-forest", seed, 0.96, 0.65, 0.85, 0.50 + jitter, seconds=12),
            _row("hrz-forest/leaf-attack", seed, 0.96, 0.55, 0.85, 0.40, seconds=11),
            _row("hrz-forest/per-level-attack", seed, 0.96, 0.66 - jitter, 0.85, 0.5, seconds=30),
        ]
    verdicts = {c["claim"][:3]: c["verdict"] for c in claims(rows, summarise(rows))}
    assert verdicts == {
        "(a)": "holds",
        "(b)": "holds",
        "(c)": "holds",
        "(d)": "holds",
        "(e)": "holds",
    }
    # TeCoA as accurate zero-shot as CLIP: claim (b) is contradicted.
    flipped = [
        _row("tecoa", r["seed"], 0.95, 0.6, 0.95, 0.4) if r["method"] == "tecoa" else r
        for r in rows
    ]
    verdicts = {c["claim"][:3]: c["verdict"] for c in claims(flipped, summarise(flipped))}
    assert verdicts["(b)"] == "contradicted"


def test_bad_compare_settings_are_refused():
    with pytest.raises(UserInputError, match="`methods` must be"):
        CompareSettings(methods=("clip", "madry"))
    with pytest.raises(UserInputError, match="`seeds` must be"):
        CompareSettings(seeds=())
    with pytest.raises(UserInputError, match="`seeds` must be distinct"):
        CompareSettings(seeds=(1, 1))
    with pytest.raises(UserInputError, match="`suite` must be one of"):
        CompareSettings(suite="imagenet-15")
    with pytest.raises(UserInputError, match="`learning_rates` must be"):
        CompareSettings(learning_rates={"tecoa": 0.0})
    with pytest.raises(UserInputError, match="`learning_rates` must be"):
        CompareSettings(learning_rates={"madry": 1e-4})
