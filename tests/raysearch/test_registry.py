"""Promote, predict and evaluate on the shared smoke-sized search (``searched`` fixture).

The search has trial 0 (finished, evaluated at eps 0.2), trial 1 (finished, the best by robust
leaf accuracy) and trial 2 (pruned).
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from raysearch import tracking
from raysearch.cli import main
from raysearch.model_package import META_FILE, locate_package
from tests.raysearch.conftest import MODEL


def _uri(searched) -> str:
    return searched["result"].tracking_uri


def _store(searched) -> list[str]:
    return ["--tracking-uri", _uri(searched)]


def _versions(searched):
    return tracking.client(_uri(searched)).search_model_versions(f"name = '{MODEL}'")


def test_promote_registers_one_version_with_its_alias_lineage_and_files(
    searched, promoted, capsys, tmp_path
):
    client = tracking.client(_uri(searched))
    (version,) = _versions(searched)
    best = next(row for row in searched["result"].rows if row.number == 1)
    assert version.run_id == best.run_id
    assert client.get_model_version_by_alias(MODEL, "champion").version == version.version
    tags = version.tags
    assert tags["raysearch.trial_run"] == best.run_id
    assert tags["raysearch.search_run"] == searched["result"].parent_run_id
    assert tags["raysearch.job"].endswith("-trial-001") and tags["raysearch.code_version"]
    assert len(tags["raysearch.config_hash"]) == 16
    mlflow.set_tracking_uri(_uri(searched))  # models:/ URIs resolve in the registry
    try:
        folder = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{MODEL}@champion", dst_path=str(tmp_path)
            )
        )
    finally:
        mlflow.set_tracking_uri(None)
    package = locate_package(folder)
    names = {path.name for path in package.iterdir()}
    assert names == {"weights.safetensors", "config.json", "trees.json", "profile.json", META_FILE}
    meta = json.loads((package / META_FILE).read_text())
    assert meta["templates"] == ["a photo of a {}."]
    assert meta["trees"] == ["form", "symmetry", "corners"]
    assert not list(folder.rglob("*.pkl"))  # models from code: nothing to unpickle
    # The trial's run is left as it was: FINISHED, its status tag intact.
    run = client.get_run(best.run_id)
    assert run.info.status == "FINISHED" and run.data.tags[tracking.STATUS_TAG] == "finished"


def test_promoting_the_same_run_again_reuses_its_version(searched, promoted, capsys):
    capsys.readouterr()
    assert main([*promoted, "--name", MODEL, *_store(searched)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"already registered: {MODEL} version 1")
    assert len(_versions(searched)) == 1


@pytest.mark.parametrize("name", [f"{MODEL}'", f"{MODEL}' or name != '", "a/b"])
def test_a_model_name_mlflow_filters_cannot_carry_is_refused_without_a_new_version(
    searched, promoted, capsys, name
):
    capsys.readouterr()
    assert main([*promoted, "--name", name, *_store(searched)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "`--name` must be 1 to 256 characters" in err
    client = tracking.client(_uri(searched))
    assert [model.name for model in client.search_registered_models()] == [MODEL]
    assert len(_versions(searched)) == 1


def test_promote_refuses_pruned_failed_and_checkpointless_runs(searched, promoted, capsys):
    client = tracking.client(_uri(searched))
    result = searched["result"]
    pruned = next(row for row in result.rows if row.status == "pruned")
    experiment = client.get_run(result.parent_run_id).info.experiment_id
    parent_tag = {tracking.PARENT_TAG: result.parent_run_id}
    failed = client.create_run(experiment, tags={**parent_tag, tracking.STATUS_TAG: "failed"})
    client.set_terminated(failed.info.run_id, status="FAILED")
    bare = client.create_run(experiment, tags={**parent_tag, tracking.STATUS_TAG: "finished"})
    client.set_terminated(bare.info.run_id, status="FINISHED")
    cases = [
        (pruned.run_id, "it was pruned"),
        (failed.info.run_id, "it FAILED"),
        (bare.info.run_id, "it has none"),
    ]
    try:
        for run_id, reason in cases:
            argv = ["promote", "--search", result.name, "--run", run_id, "--name", MODEL]
            assert main([*argv, *_store(searched)]) == 2
            err = capsys.readouterr().err.strip()
            assert err.count("\n") == 0 and "`--run` must be a finished trial" in err
            assert reason in err
        argv = ["promote", "--search", result.name, "--metric", "robust_leaf", "--name", MODEL]
        assert main([*argv, "--min-clean", "1.01", *_store(searched)]) == 2
        assert "with clean_leaf >= 1.01" in capsys.readouterr().err
        # Test-split numbers are reported, never selected on.
        for metric in ("test.robust_leaf", "test/zeroshot_robust"):
            argv = ["promote", "--search", result.name, "--metric", metric, "--name", MODEL]
            assert main([*argv, *_store(searched)]) == 2
            assert "`--metric` must be a validation metric" in capsys.readouterr().err
        assert (
            main(
                [
                    "promote",
                    "--search",
                    "no-such-search",
                    "--metric",
                    "robust_leaf",
                    "--name",
                    MODEL,
                    *_store(searched),
                ]
            )
            == 2
        )
        assert "`--search` must be the run id or name of a search" in capsys.readouterr().err
    finally:
        client.delete_run(failed.info.run_id)
        client.delete_run(bare.info.run_id)
    assert len(_versions(searched)) == 1


def _reference_classes(searched, images: torch.Tensor, scratch: Path) -> list[dict[str, str]]:
    """The trial's classifier built the way the training job built it, from its checkpoint."""
    from raysearch.config import config_from_dict
    from trainables.clip_loader import load_clip
    from trainables.hierarchy.tree_dicts import forest_from_dict
    from trainables.methods import build_method

    client = tracking.client(_uri(searched))
    best = next(row for row in searched["result"].rows if row.number == 1)
    folder = Path(client.download_artifacts(best.run_id, "", str(scratch)))
    config = config_from_dict(json.loads((folder / "inputs" / "config.json").read_text()))
    forest = forest_from_dict(json.loads((folder / "inputs" / "trees.json").read_text()))
    state = torch.load(folder / "checkpoint" / "state.pt", weights_only=True)["model"]
    method = build_method(config.method, load_clip(config.model.name), forest)
    method.classifier.load_state_dict(state)
    classifier = method.classifier.with_forest(forest).eval()
    with torch.no_grad():
        logits = classifier(images.float() / 255.0)
    classes = []
    for row in range(len(images)):
        entry = {}
        for (tree, level), part in classifier.layout.slices.items():
            index = int(logits[row, part].argmax()) + part.start
            entry["leaf" if level == 0 else f"{tree}/{level}"] = classifier.layout.names[index]
        classes.append(entry)
    return classes


@pytest.fixture(scope="module")
def test_images():
    from trainables.data.embedded import load_embedded

    return load_embedded().split("test").images[:12]


def test_pyfunc_and_cli_predictions_match_the_trained_model(
    searched, promoted, test_images, tmp_path, capsys
):
    from PIL import Image

    reference = _reference_classes(searched, test_images, tmp_path)
    mlflow.set_tracking_uri(_uri(searched))
    try:
        model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    finally:
        mlflow.set_tracking_uri(None)
    frame = model.predict(test_images.permute(0, 2, 3, 1).numpy())
    for row, expected in enumerate(reference):
        for column, name in expected.items():
            assert frame[column][row] == name, (row, column)
    probabilities = frame["leaf_probability"].to_numpy()
    assert np.all((probabilities > 0) & (probabilities <= 1))

    paths = []
    for index in range(3):
        path = tmp_path / f"image-{index}.png"
        Image.fromarray(test_images[index].permute(1, 2, 0).numpy()).save(path)
        paths.append(str(path))
    from_files = model.predict(pd.DataFrame({"image": paths}))
    assert from_files["leaf"].tolist() == [expected["leaf"] for expected in reference[:3]]
    capsys.readouterr()
    assert (
        main(
            ["predict", "--model", f"models:/{MODEL}@champion", *paths, "--json", *_store(searched)]
        )
        == 0
    )
    printed = json.loads(capsys.readouterr().out)
    assert [entry["leaf"]["class"] for entry in printed] == [e["leaf"] for e in reference[:3]]
    form = {level["level"]: level["class"] for level in printed[0]["levels"]["form"]}
    assert form[2] == reference[0]["form/2"]
    argv = ["predict", "--model", f"models:/{MODEL}@champion", paths[0]]
    assert main([*argv, *_store(searched)]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"{paths[0]}: {reference[0]['leaf']} (")
    assert "  form: " in text and " > " in text


def test_evaluate_on_a_run_id_and_on_the_registered_model_agree(searched, promoted, capsys):
    best = next(row for row in searched["result"].rows if row.number == 1)
    reports = []
    for model in (best.run_id, f"models:/{MODEL}@champion"):
        argv = ["evaluate", "--model", model, "--samples", "48", "--steps", "2", "--json"]
        assert main([*argv, *_store(searched)]) == 0
        reports.append(json.loads(capsys.readouterr().out))
    by_run, by_model = reports
    assert by_run["clean"] == by_model["clean"]
    assert by_run["robust_leaf"] == by_model["robust_leaf"]
    assert set(by_run["superclass_attacks"]) == {"form", "symmetry", "corners"}
    assert by_run["settings"]["samples"] == 48
    assert 0 <= by_run["robust_leaf"] <= by_run["clean_leaf"] <= 1


def test_trials_log_validation_test_and_zero_shot_metrics(searched):
    client = tracking.client(_uri(searched))
    finished = [row for row in searched["result"].rows if row.status == "finished"]
    metrics = client.get_run(finished[0].run_id).data.metrics
    for name in ("clean_leaf", "robust_leaf", "test.clean_leaf", "test.robust_leaf"):
        assert 0 <= metrics[name] <= 1, name
    for name in ("zeroshot_clean", "zeroshot_robust", "test.zeroshot_clean"):
        assert 0 <= metrics[name] <= 1, name
    assert "zeroshot.embedded-colour.clean" in metrics


def test_evaluate_a_suite_on_a_trained_and_on_the_base_model(searched, promoted, capsys, tmp_path):
    reports = []
    for model in (f"models:/{MODEL}@champion", "embedded"):
        argv = ["evaluate", "--model", model, "--suite", "embedded-zeroshot", "--json"]
        argv += ["--samples", "24", "--steps", "2", "--eps", "2/255,4/255"]
        assert main([*argv, *_store(searched)]) == 0
        reports.append(json.loads(capsys.readouterr().out))
    for report in reports:
        assert report["split"] == "test" and report["fine_tuned_on"] == "embedded"
        assert len(report["datasets"]) == 4
        for result in report["datasets"].values():
            assert {"clean", "robust", "pgd", "levels"} <= set(result)
            assert list(result["pgd"]) == ["2/255", "4/255"]
        assert set(report["average"]) == {"clean", "robust"}
    # The two models differ (fine-tuning changed the image encoder), on the same images.
    trained, base = reports
    assert trained["datasets"] != base["datasets"]
    # A table and a plot without --json.
    plot = tmp_path / "suite.png"
    argv = ["evaluate", "--model", "embedded", "--suite", "embedded-zeroshot"]
    argv += ["--samples", "16", "--steps", "1", "--plot", str(plot)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "every dataset below is zero-shot" in out and "average" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_predict_and_evaluate_refuse_bad_input_with_one_line(searched, promoted, capsys, tmp_path):
    assert (
        main(
            [
                "predict",
                "--model",
                f"models:/{MODEL}@champion",
                str(tmp_path / "none.png"),
                *_store(searched),
            ]
        )
        == 2
    )
    assert "`IMAGE` must be an existing image file" in capsys.readouterr().err
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("not an image")
    assert (
        main(
            [
                "predict",
                "--model",
                f"models:/{MODEL}@champion",
                str(not_an_image),
                *_store(searched),
            ]
        )
        == 2
    )
    assert "`image` must be a readable image" in capsys.readouterr().err
    assert main(["evaluate", "--model", "models:/no-such-model@champion", *_store(searched)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "`--model` must be a registered model" in err
    assert main(["evaluate", "--model", "not-a-run-or-folder", *_store(searched)]) == 2
    assert "`--model` must be models:/NAME@ALIAS, a run id" in capsys.readouterr().err


def test_the_suite_table_marks_the_fine_tuning_dataset_and_gives_both_means():
    from raysearch.commands.evaluate import format_suite
    from trainables.evaluate import AttackSettings

    def result(clean, in_distribution):
        pgd = {"1/255": clean / 2}
        return {"classes": 10, "clean": clean, "pgd": pgd, "in_distribution": in_distribution}

    report = {
        "model": "m",
        "suite": "tecoa16",
        "split": "test",
        "fine_tuned_on": "imagenet1k",
        "settings": {
            "eps": ["1/255"],
            "autoattack": None,
            "headline_eps": "1/255",
            "attack": AttackSettings(eps=1 / 255, steps=10).describe(),
        },
        "seconds": 3.0,
        "datasets": {"imagenet1k": result(0.8, True), "cifar10": result(0.6, False)},
        "average": {"clean": 0.6, "robust": 0.3},
        "average_all": {"clean": 0.7, "robust": 0.35},
    }
    out = format_suite(report)
    assert "imagenet1k in-distribution (*), the rest zero-shot" in out
    assert "imagenet1k *" in out
    assert "average, zero-shot" in out and "0.600" in out
    assert "average, all" in out and "0.700" in out
