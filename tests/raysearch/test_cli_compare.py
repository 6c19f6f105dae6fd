from __future__ import annotations

import json

import pytest

from raysearch.cli import main


def test_compare_prints_one_table_and_writes_json(tmp_path, capsys, base_model):
    out = tmp_path / "compare.json"
    code = main(
        [
            "compare",
            "--methods",
            "clip,tecoa",
            "--seeds",
            "0",
            "--steps",
            "1",
            "--batch-size",
            "16",
            "--train-size",
            "32",
            "--eval-samples",
            "16",
            "--eval-steps",
            "1",
            "--eval-eps",
            "8/255",
            "--json",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0
    assert "method" in printed and "tecoa" in printed and "form/1 lvl/leaf" in printed
    assert "eps=8/255" in printed
    results = json.loads(out.read_text())
    assert [row["method"] for row in results["rows"]] == ["clip", "tecoa"]
    assert results["settings"]["evaluation"]["eps"] == pytest.approx(8 / 255)
    assert results["rows"][1]["lr"] == results["settings"]["learning_rates"]["tecoa"]
    assert "validation-selected" in printed


def test_compare_lr_flag_trains_every_method_at_one_rate():
    from raysearch.cli import build_parser
    from raysearch.commands.compare import settings_from_args

    settings_args = build_parser().parse_args(["compare", "--lr", "3e-4"])
    settings = settings_from_args(settings_args)
    assert settings.optim.lr == 3e-4
    assert settings.learning_rates is None
    assert {settings.lr_of(name) for name in settings.methods} == {3e-4}


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["--methods", "clip,madry"], "`methods` must be"),
        (["--eps", "4/0"], "`eps` must be"),
        (["--eval-eps", "2"], "`eps` must be"),
        (["--seeds", "a,b"], "`seeds` must be"),
        (["--steps", "0"], "`optim.max_steps` must be"),
    ],
)
def test_bad_compare_arguments_give_one_line_and_exit_2(argv, field, capsys):
    assert main(["compare", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert field in err and len(err.splitlines()) == 1
