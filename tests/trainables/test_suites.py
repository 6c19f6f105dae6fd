"""Zero-shot suites: registry, disjointness from the fine-tuning data, and the evaluator."""

from __future__ import annotations

import pytest

from trainables.data.class_lists import dataset_classes
from trainables.errors import UserInputError
from trainables.hierarchy.shipped import load_shipped
from trainables.model import ZeroShotClassifier
from trainables.suites import (
    SUITES,
    Suite,
    SuiteDataset,
    check_disjoint,
    class_names,
    evaluate_suite,
    get_suite,
    suite_forest,
    summary_metrics,
)


def test_the_embedded_suite_never_shares_a_class_with_the_fine_tuning_data():
    fine_tuning = class_names(load_shipped("embedded"))
    suite = get_suite("embedded-zeroshot")
    assert len(suite.datasets) >= 4
    for entry in suite.datasets:
        forest = suite_forest(entry)
        assert forest.leaves == dataset_classes(entry.dataset)
        assert not class_names(forest) & fine_tuning, entry.dataset
        assert entry.dataset not in suite.excludes
    check_disjoint(suite, load_shipped("embedded"))  # does not raise
    # The held-out shapes come with a tree of their own; the attributes are flat class lists.
    depths = {entry.dataset: suite_forest(entry).trees[0].depth for entry in suite.datasets}
    assert depths["embedded-heldout-shapes"] == 2
    assert {depths[n] for n in depths if n != "embedded-heldout-shapes"} == {0}


def test_a_suite_that_overlaps_the_fine_tuning_classes_is_refused():
    overlapping = Suite(
        "leaky", (SuiteDataset("embedded", trees="embedded"),), eps=(4 / 255,), headline_eps=4 / 255
    )
    with pytest.raises(UserInputError, match="`suite leaky` must be datasets whose classes"):
        check_disjoint(overlapping, load_shipped("embedded"))


def test_unknown_suites_and_splits_are_refused(tiny_clip):
    with pytest.raises(UserInputError, match="`suite` must be one of 'embedded-zeroshot'"):
        get_suite("imagenet-15")
    classifier = ZeroShotClassifier(tiny_clip, load_shipped("embedded"))
    with pytest.raises(UserInputError, match="`split` must be one of"):
        evaluate_suite(classifier, "embedded-zeroshot", split="train")
    with pytest.raises(UserInputError, match="`headline_eps` must be one of"):
        Suite("bad", SUITES["embedded-zeroshot"].datasets, eps=(1 / 255,), headline_eps=4 / 255)


def test_suite_report_has_every_dataset_the_average_and_the_settings(tiny_clip):
    classifier = ZeroShotClassifier(tiny_clip, load_shipped("embedded")).eval()
    report = evaluate_suite(
        classifier, "embedded-zeroshot", split="val", samples=24, eps=(2 / 255, 4 / 255), steps=2
    )
    assert report["split"] == "val" and report["settings"]["eps"] == ["2/255", "4/255"]
    assert report["settings"]["headline_eps"] == "4/255"
    names = [entry.dataset for entry in SUITES["embedded-zeroshot"].datasets]
    assert list(report["datasets"]) == names
    for name, result in report["datasets"].items():
        assert result["samples"] == 24 and result["chance"] == 1 / result["classes"]
        assert result["robust"] == result["pgd"]["4/255"]
        assert 0 <= result["robust"] <= 1 and 0 <= result["clean"] <= 1
        assert ("profile" in result) == (name == "embedded-heldout-shapes")
    for key in ("clean", "robust"):
        mean = sum(r[key] for r in report["datasets"].values()) / len(names)
        assert report["average"][key] == pytest.approx(mean)
    metrics = summary_metrics(report)
    assert metrics["zeroshot_clean"] == report["average"]["clean"]
    assert (
        metrics["zeroshot/embedded-colour/robust"]
        == report["datasets"]["embedded-colour"]["robust"]
    )


def test_the_base_model_classifies_the_suite_and_attacks_break_it(base_model):
    classifier = ZeroShotClassifier(base_model.loaded, load_shipped("embedded")).eval()
    report = evaluate_suite(
        classifier, "embedded-zeroshot", split="test", samples=100, eps=(2 / 255, 8 / 255)
    )
    for name, result in report["datasets"].items():
        assert result["clean"] > (1 + result["chance"]) / 2, name  # halfway from chance to 1
        # Robust accuracy does not rise with the radius.
        assert result["pgd"]["8/255"] <= result["pgd"]["2/255"] + 0.02, name
    # The held-out shapes' per-level profile: every superclass level under its own attack.
    profile = report["datasets"]["embedded-heldout-shapes"]["profile"]
    assert set(profile["superclass_attacks"]["strokes"]) == {1, 2}
