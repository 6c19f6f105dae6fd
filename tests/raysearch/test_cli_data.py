"""`raysearch data info` and `raysearch data build`, run in-process."""

from __future__ import annotations

import json

import pytest

from raysearch.cli import main
from tests.image_datasets import write_image_folder, write_imagenet
from trainables.data.embedded_taxonomy import LEAVES

SMALL = ["--n-train", "200", "--n-val", "20", "--n-test", "20"]


@pytest.fixture(autouse=True)
def cache_root(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYSEARCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _run_json(capsys, *argv: str) -> dict:
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_info_json_describes_classes_trees_splits_and_cache(capsys, cache_root):
    info = _run_json(capsys, "data", "info", "--json", *SMALL)
    assert info["classes"] == list(LEAVES)
    assert [tree["name"] for tree in info["trees"]] == ["form", "symmetry", "corners"]
    for tree in info["trees"]:
        sizes = tree["nodes_per_level"]
        assert len(sizes) == tree["depth"] + 1 and sizes[0] == len(LEAVES)
        assert all(
            a > b for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        )  # coarser towards the root
    assert info["splits"] == {"train": 200, "val": 20, "test": 20}
    assert info["image_size"] == 32
    assert info["cache_path"].startswith(str(cache_root))
    assert info["cached"] is False


def test_info_text_lists_the_same(capsys):
    assert main(["data", "info", *SMALL]) == 0
    out = capsys.readouterr().out
    assert "20 classes" in out and "hourglass" in out
    assert "form" in out and "symmetry" in out and "corners" in out
    assert "train 200, val 20, test 20" in out and "not built yet" in out


def test_build_renders_once_then_reports_the_cache(capsys):
    first = _run_json(capsys, "data", "build", "--json", *SMALL)
    assert first["rendered"] is True and first["images"] == 240
    second = _run_json(capsys, "data", "build", "--json", *SMALL)
    assert second["rendered"] is False and second["cache_path"] == first["cache_path"]
    info = _run_json(capsys, "data", "info", "--json", *SMALL)
    assert info["cached"] is True and info["cache_path"] == first["cache_path"]
    assert main(["data", "build", *SMALL]) == 0
    assert first["cache_path"] in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["data", "info", "--image-size", "48"], "`image_size` must be"),
        (["data", "build", "--n-train", "3"], "`n_train` must be"),
        (["data", "info", "--noise-max", "2"], "`noise_max` must be"),
        (["data", "info", "--seed", "abc"], "invalid int value"),
        (["data", "frobnicate"], "invalid choice"),
        (["data"], "required"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(capsys, argv, expected):
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], captured.err
    assert captured.out == ""


@pytest.mark.parametrize(
    ("dataset", "label", "classes", "depth"),
    [
        ("embedded-heldout-shapes", "shape", 12, 2),
        ("embedded-colour", "colour", 8, 0),
        ("embedded-size", "size", 3, 0),
        ("embedded-background", "background", 3, 0),
    ],
)
def test_every_suite_dataset_can_be_described_and_built(
    capsys, cache_root, dataset, label, classes, depth
):
    info = _run_json(capsys, "data", "info", "--dataset", dataset, "--json")
    assert info["dataset"] == dataset and info["label"] == label
    assert len(info["classes"]) == classes and info["trees"][0]["depth"] == depth
    assert info["splits"] == {"train": 1000, "val": 1000, "test": 1000}  # the suite's defaults
    built = _run_json(capsys, "data", "build", "--dataset", dataset, "--n-train", "16", "--json")
    assert built["rendered"] and built["images"] == 16 + 1000 + 1000


def test_info_checks_an_image_folder_on_disk(capsys, tmp_path):
    root = write_imagenet(tmp_path / "imagenet")
    info = _run_json(
        capsys, "data", "info", "--dataset", "imagenet1k", "--root", str(root), "--json"
    )
    assert info["classes"] == 1000 and info["root"] == str(root)
    assert info["splits"] == {"train": 1000, "val": 1000, "test": 1000}
    assert main(["data", "info", "--dataset", "imagenet1k", "--root", str(root)]) == 0
    assert "imagenet1k: 1000 classes, train 1,000, val 1,000, test 1,000 images" in (
        capsys.readouterr().out
    )


@pytest.mark.parametrize("dataset", ["stl10", "sun397", "flowers", "caltech101", "tinyimagenet"])
def test_info_describes_every_suite_format(capsys, suite_root, dataset):
    info = _run_json(
        capsys, "data", "info", "--dataset", dataset, "--root", str(suite_root), "--json"
    )
    assert info["dataset"] == dataset and info["classes"] >= 2
    assert all(info["splits"][split] > 0 for split in ("train", "val", "test"))
    assert main(["data", "info", "--dataset", dataset, "--root", str(suite_root)]) == 0
    assert f"{dataset}: {info['classes']} classes" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("dataset", "broken", "expected"),
    [
        ("imagenet1k", "empty", "train/<class>/ is missing"),
        ("imagenet1k", "three classes", "must hold the 1000 class folders of imagenet1k"),
        ("cifar10", "empty", "`root` must be a folder holding cifar10"),
        ("pcam", "empty", "pcam/camelyonpatch_level_2_split_train_x.h5 is missing"),
        ("food101", "empty", "food-101"),
        ("cars", "empty", "stanford_cars"),
    ],
)
def test_info_names_what_is_missing_on_disk(capsys, tmp_path, dataset, broken, expected):
    root = tmp_path / "data"
    root.mkdir()
    if broken == "three classes":
        write_image_folder(root)
    assert main(["data", "info", "--dataset", dataset, "--root", str(root)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], captured.err
