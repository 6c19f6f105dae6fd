from __future__ import annotations

import json
import time

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
        (["--seeds", "0,4294967296"], "`seeds` must be an integer from 0 to 2**32 - 1"),
        (["--json", "/proc/compare.json"], "`--json` must be a path outside /proc"),
    ],
)
def test_bad_compare_arguments_give_one_line_and_exit_2(argv, field, capsys):
    assert main(["compare", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert field in err and len(err.splitlines()) == 1


def test_a_json_path_that_cannot_be_written_is_refused_before_any_training(tmp_path, capsys):
    below_a_file = tmp_path / "file"
    below_a_file.write_text("")
    for path, fragment in [
        (tmp_path, "a file path, not a folder"),
        (below_a_file / "x.json", "is a file)"),
    ]:
        started = time.perf_counter()
        assert main(["compare", "--json", str(path)]) == 2
        err = capsys.readouterr().err
        assert fragment in err and err.count("\n") == 1
        assert time.perf_counter() - started < 10  # refused before the base model or any row


def test_results_survive_a_json_path_that_breaks_during_the_run(tmp_path, capsys):
    from raysearch.commands.compare import _write_results

    wanted = tmp_path / "gone" / "compare.json"
    (tmp_path / "gone").write_text("a file now stands where the folder was")
    written = _write_results({"rows": [1, 2]}, wanted)
    assert written != wanted
    assert json.loads(written.read_text()) == {"rows": [1, 2]}
    assert f"could not write {wanted}" in capsys.readouterr().err
    written.unlink()
