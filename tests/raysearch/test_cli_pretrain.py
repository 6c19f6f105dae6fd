from __future__ import annotations

import json

from raysearch.cli import main


def test_pretrain_json_reports_every_level_and_the_attack(base_model, forest, capsys):
    assert main(["pretrain", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["built"] is False and summary["weights"] == str(base_model.path)
    report = summary["report"]["val"]
    for tree in forest.trees:
        assert sorted(map(int, report["clean"][tree.name])) == list(range(tree.depth + 1))
    attack = report["pgd_leaf"]["attack"]
    assert attack["steps"] == 10 and abs(attack["eps"] - 8 / 255) < 1e-12
    assert 0 <= report["pgd_leaf"]["leaf"] < 0.2


def test_demo_prints_dataset_trees_report_and_a_search(
    base_model, capsys, tmp_path, monkeypatch, ray_local
):
    # The demo's own search, cut to one trial, with its stores in the working directory.
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["demo", "--trials", "1"]) == 0
    out = capsys.readouterr().out
    assert "[1/6] embedded dataset: 20 classes" in out
    assert "form (depth 3: 20/8/3/2)" in out
    assert "loaded from the cache" in out
    assert "leaf accuracy under PGD-10 L-inf eps=8/255" in out
    assert "[4/6] search demo.yaml: 1 trials" in out
    assert "trial 0 finished" in out
    assert "Pareto front (zeroshot_robust vs clean_leaf): trials 0" in out
    assert "[5/6] registered trial 0 as raysearch-demo version 1, alias champion" in out
    assert "[6/6] models:/raysearch-demo@champion on example.png" in out
    assert "      leaf: " in out
    assert "raysearch predict --model models:/raysearch-demo@champion" in out
    assert (tmp_path / "mlflow.db").is_file()
    assert len(list((tmp_path / "ray_results" / "searches").glob("demo-*/report/summary.csv"))) == 1


def test_bad_arguments_give_one_line_and_exit_2(capsys):
    assert main(["pretrain", "--steps", "zero"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "invalid int value" in err
    assert main(["pretrain", "--steps", "0"]) == 2
    assert "`pretrain.steps` must be >= 1, but got 0." in capsys.readouterr().err
    assert main(["no-such-command"]) == 2
