"""Zero-shot suites: registry, disjointness from the fine-tuning data, and the evaluator."""

from __future__ import annotations

import re

import pytest

from tests.image_datasets import write_image_folder
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


# -- suites written in YAML: the datasets a user has on disk ---------------------------------


def _suite_file(tmp_path, text: str):
    path = tmp_path / "my-suite.yaml"
    path.write_text(text)
    return path


def test_a_suite_file_evaluates_image_folders_at_the_models_size(tmp_path, tiny_clip):
    first = write_image_folder(tmp_path / "animals", classes=("cat", "dog", "fox"), test=3)
    second = write_image_folder(tmp_path / "vehicles", classes=("bus", "car"), test=3, seed=1)
    path = _suite_file(
        tmp_path,
        f"""
description: two folders
eps: [0.00392156862745098, 0.0156862745]
steps: 2
datasets:
  - {{dataset: imagefolder, root: {first}, templates: ["This is a photo of a {{}}"]}}
  - {{dataset: imagefolder, root: {second}, samples: 4}}
""",
    )
    suite = get_suite(str(path))
    assert suite.name == "my-suite" and suite.headline_eps == 0.0156862745
    assert [entry.root for entry in suite.datasets] == [str(first), str(second)]
    classifier = ZeroShotClassifier(tiny_clip, load_shipped("embedded")).eval()
    check_disjoint(suite, classifier.forest)
    report = evaluate_suite(classifier, suite, split="test", profile=False)
    assert {name: result["samples"] for name, result in report["datasets"].items()} == {
        "animals": 9,
        "vehicles": 4,
    }
    assert report["datasets"]["animals"]["templates"] == ["This is a photo of a {}"]
    assert report["datasets"]["vehicles"]["classes"] == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[1, 2]", "must be a mapping with `datasets`"),
        ("datasets: []", "datasets` must be a non-empty list"),
        ("datasets: [nosuch]", "datasets[0].dataset` must be one of"),
        ("datasets: [cifar10]\nepsilon: [0.1]", "must be one of the keys"),
        ("datasets: [{dataset: cifar10, path: x}]", "made of the keys"),
        ("datasets: [{dataset: cifar10, templates: [a photo]}]", "placeholder"),
        ("datasets: [cifar10]\neps: [0, 0.1]", "eps` must be a list of radii in (0, 1]"),
        ("datasets: [cifar10]\neps: [0.1]\nheadline_eps: 0.2", "headline_eps` must be one of"),
        ("datasets: [{dataset: cifar10, samples: 0}]", "samples` must be an integer >= 1"),
        ("datasets: [cifar10, cifar10]", "datasets[1].name` must be a name no other"),
    ],
)
def test_a_bad_suite_file_is_one_line_naming_the_field(tmp_path, text, expected):
    path = _suite_file(tmp_path, text)
    with pytest.raises(UserInputError, match=re.escape(expected)) as error:
        get_suite(str(path))
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_a_job_can_name_a_suite_file(tmp_path):
    from raysearch.config import load_config

    path = _suite_file(tmp_path, "datasets: [cifar10]\n")
    config = load_config(None, [f"data.zeroshot_suite={path}"])
    assert config.data.zeroshot_suite == str(path)
    with pytest.raises(UserInputError, match="`data.zeroshot_suite` must be one of"):
        load_config(None, [f"data.zeroshot_suite={tmp_path / 'missing.yaml'}"])


def test_tecoa16_evaluates_all_sixteen_datasets_from_one_root(suite_root, tiny_clip):
    from trainables.data.benchmark_prompts import TECOA_TEMPLATES
    from trainables.suites import TECOA16

    suite = get_suite("tecoa16")
    assert [entry.dataset for entry in suite.datasets] == list(TECOA16)
    assert {entry.templates for entry in suite.datasets} == {TECOA_TEMPLATES}
    trees = {entry.dataset: entry.trees for entry in suite.datasets if entry.trees}
    assert trees == {
        "imagenet1k": "imagenet1k-wordnet",
        "cifar10": "cifar10-wordnet",
        "cifar100": "cifar100-wordnet",
    }
    classifier = ZeroShotClassifier(tiny_clip, load_shipped("embedded")).eval()
    report = evaluate_suite(
        classifier,
        suite,
        split="val",
        samples=2,
        eps=(1 / 255,),
        steps=1,
        profile=False,
        data_root=suite_root,
        fine_tuned_on="imagenet1k",
    )
    results = report["datasets"]
    assert list(results) == list(TECOA16)
    assert results["imagenet1k"]["classes"] == 1000 and results["flowers"]["classes"] == 102
    assert len(results["imagenet1k"]["levels"]["imagenet1k-wordnet"]) == 6  # leaf + 5 levels
    assert [name for name, r in results.items() if r["in_distribution"]] == ["imagenet1k"]
    zero_shot = [r["clean"] for name, r in results.items() if name != "imagenet1k"]
    assert report["average"]["clean"] == pytest.approx(sum(zero_shot) / 15)
    every = [r["clean"] for r in results.values()]
    assert report["average_all"]["clean"] == pytest.approx(sum(every) / 16)
    metrics = summary_metrics(report)
    assert metrics["zeroshot_clean"] == report["average"]["clean"]
    assert "zeroshot/pcam/robust" in metrics


def test_real_suites_may_hold_the_fine_tuning_dataset(suite_root):
    # The TeCoA line evaluates ImageNet beside the zero-shot datasets; only the embedded
    # datasets promise classes fine-tuning never sees.
    check_disjoint(get_suite("tecoa16"), load_shipped("embedded"))


@pytest.mark.parametrize(
    ("templates", "expected"),
    [
        ("tecoa", ("This is a photo of a {}",)),
        ("clip_benchmark", ("a photo of {}, a type of food.",)),
        ('["a {} dish."]', ("a {} dish.",)),
    ],
)
def test_a_suite_file_names_a_template_set(tmp_path, templates, expected):
    path = _suite_file(tmp_path, f"templates: {templates}\ndatasets: [food101, cifar10]\n")
    suite = get_suite(str(path))
    assert suite.datasets[0].templates == expected
    if templates == "clip_benchmark":
        assert len(suite.datasets[1].templates) == 18  # CIFAR-10's own ensemble
    override = _suite_file(
        tmp_path, f"templates: {templates}\ndatasets: [{{dataset: dtd, templates: tecoa}}]\n"
    )
    assert get_suite(str(override)).datasets[0].templates == ("This is a photo of a {}",)


def test_clip_benchmark_templates_need_a_dataset_it_has_them_for(tmp_path):
    path = _suite_file(tmp_path, "templates: clip_benchmark\ndatasets: [imagefolder]\n")
    with pytest.raises(UserInputError, match="clip_benchmark has no templates for imagefolder"):
        get_suite(str(path))


def test_a_suite_is_checked_on_disk_before_anything_runs(suite_root, tmp_path):
    from trainables.suites import check_on_disk

    check_on_disk(get_suite("tecoa16"), suite_root)  # all 16 there: no error
    check_on_disk(get_suite("embedded-zeroshot"), tmp_path)  # rendered, never on disk
    with pytest.raises(UserInputError, match="imagenet1k|imagenet"):
        check_on_disk(get_suite("tecoa16"), tmp_path)
