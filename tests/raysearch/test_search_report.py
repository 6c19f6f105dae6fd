"""The search report: best trial and Pareto front (checked against Optuna's own), the summary
table files, the plots and the console table. No Ray: rows and studies are built in memory."""

from __future__ import annotations

import math
import random

import optuna
import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from raysearch.search_report import (
    TrialRow,
    best_trials,
    describe_params,
    dominates,
    format_table,
    summary_records,
    write_plots,
    write_summary,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

PNG = b"\x89PNG"
DIRECTIONS = {"max": "maximize", "min": "minimize"}


def _row(number: int, status: str = "finished", **metrics) -> TrialRow:
    return TrialRow(number=number, trial_id=f"t{number}", status=status, metrics=metrics)


def _reference_front(values: list[list[float]], modes: list[str]) -> set[int]:
    study = optuna.create_study(directions=[DIRECTIONS[mode] for mode in modes])
    for trial_values in values:
        study.add_trial(
            create_trial(
                values=trial_values, state=TrialState.COMPLETE, params={}, distributions={}
            )
        )
    return {trial.number for trial in study.best_trials}


# -- best trial and Pareto front ------------------------------------------------------------------


@pytest.mark.parametrize("modes", [["max", "max"], ["max", "min"], ["min", "max"], ["min", "min"]])
@pytest.mark.parametrize("seed", range(6))
def test_pareto_front_matches_optunas_best_trials(seed, modes):
    rng = random.Random(seed)
    coarse = seed % 2 == 1  # few distinct values: ties and duplicate points on the front
    values = [
        [float(rng.randint(0, 3)) if coarse else rng.random() for _ in modes]
        for _ in range(rng.randint(3, 30))
    ]
    rows = [_row(i, a=a, b=b) for i, (a, b) in enumerate(values)]
    front = best_trials(rows, ["a", "b"], modes)
    assert {row.number for row in front} == _reference_front(values, modes)
    assert len(front) == len({row.number for row in front})


def test_pareto_front_is_ordered_by_the_first_objective_then_number():
    modes = ["min", "max"]
    rows = [_row(0, a=3.0, b=9.0), _row(1, a=1.0, b=1.0), _row(2, a=2.0, b=5.0)]
    rows.append(_row(3, a=1.0, b=1.0))  # a duplicate point: on the front too
    assert [row.number for row in best_trials(rows, ["a", "b"], modes)] == [1, 3, 2, 0]


@pytest.mark.parametrize("seed", range(4))
def test_dominates_agrees_with_a_pairwise_definition(seed):
    rng = random.Random(seed)
    for _ in range(200):
        modes = [rng.choice(["max", "min"]) for _ in range(2)]
        a = [float(rng.randint(0, 2)) for _ in modes]
        b = [float(rng.randint(0, 2)) for _ in modes]
        sign = [1 if mode == "max" else -1 for mode in modes]
        better = [s * x > s * y for s, x, y in zip(sign, a, b, strict=True)]
        worse = [s * x < s * y for s, x, y in zip(sign, a, b, strict=True)]
        assert dominates(a, b, modes) == (any(better) and not any(worse))
    assert not dominates([1.0, 1.0], [1.0, 1.0], ["max", "max"])  # equal points never dominate


@pytest.mark.parametrize(("mode", "expected"), [("max", 2), ("min", 0)])
def test_single_objective_returns_exactly_the_best_finished_row(mode, expected):
    rows = [_row(0, a=0.1), _row(1, a=0.5), _row(2, a=0.9), _row(3, a=0.3)]
    best = best_trials(rows, ["a"], [mode])
    assert [row.number for row in best] == [expected]


@pytest.mark.parametrize("mode", ["max", "min"])
def test_single_objective_ties_go_to_the_lower_trial_number(mode):
    value = 0.9 if mode == "max" else 0.1
    rows = [_row(4, a=value), _row(1, a=0.5), _row(2, a=value), _row(3, a=value)]
    assert [row.number for row in best_trials(rows, ["a"], [mode])] == [2]


def test_only_finished_trials_count():
    rows = [
        _row(0, "pruned", a=0.99, b=0.99),
        _row(1, "failed", a=0.98, b=0.98),
        _row(2, "unfinished", a=0.97, b=0.97),
        _row(3, "finished", a=0.2, b=0.1),
        _row(4, "finished", a=0.1, b=0.2),
    ]
    assert [row.number for row in best_trials(rows, ["a"], ["max"])] == [3]
    assert {row.number for row in best_trials(rows, ["a", "b"], ["max", "max"])} == {3, 4}


def test_rows_with_a_nan_or_missing_objective_are_left_out():
    rows = [
        _row(0, a=math.nan, b=5.0),
        _row(1, b=5.0),  # no `a` at all
        _row(2, a="text", b=5.0),  # not a number
        _row(3, a=0.1, b=0.1),
        _row(4, a=5.0, b=math.nan),
    ]
    assert [row.number for row in best_trials(rows, ["a"], ["max"])] == [4]
    assert [row.number for row in best_trials(rows, ["a", "b"], ["max", "max"])] == [3]


def test_no_finished_trial_gives_no_best():
    rows = [_row(0, "pruned", a=1.0), _row(1, "failed"), _row(2, "finished", a=math.nan)]
    assert best_trials(rows, ["a"], ["max"]) == []
    assert best_trials([], ["a", "b"], ["max", "min"]) == []


# -- summary table --------------------------------------------------------------------------


def _summary_rows() -> list[TrialRow]:
    return [
        TrialRow(
            number=2,
            trial_id="c",
            status="failed",
            params={"optim.lr": 0.001, "choice": "a"},
            metrics={"robust_leaf": 0.1},
            error="boom",
        ),
        TrialRow(
            number=0,
            trial_id="a",
            status="finished",
            params={"optim.lr": 0.0005, "choice": 0.1, "kappa": 0.05, "trees": ["form", "x"]},
            metrics={
                "robust_leaf": 0.5,
                "clean_leaf": 0.75,
                "clean/form/0": 0.9,  # per-level metrics stay out of the table
                "epochs_completed": 2,
                "epochs_total": 2,
                "trial_finished": 1,
                "done": True,
                "hostname": "node",
            },
            epochs=2,
            seconds=12.345,
            run_id="run-a",
        ),
        TrialRow(
            number=1,
            trial_id="b",
            status="pruned",
            params={"optim.lr": 0.002, "choice": None},
            metrics={"robust_leaf": 0.2, "clean_leaf": 0.3},
            epochs=1,
            seconds=3.0,
            run_id="run-b",
        ),
    ]


PARAMS = ["optim.lr", "choice", "kappa", "trees"]


def _cells(column) -> list:
    """A column's values, missing ones as None (pandas reads them back as None or NaN)."""
    return [None if pd.isna(value) else value for value in column]


def test_summary_records_are_one_flat_row_per_trial_in_number_order():
    records = summary_records(_summary_rows(), PARAMS)
    assert [record["trial"] for record in records] == [0, 1, 2]
    assert list(records[0]) == [
        "trial",
        "status",
        "epochs",
        "seconds",
        "param.optim.lr",
        "param.choice",
        "param.kappa",
        "param.trees",
        "clean_leaf",
        "robust_leaf",
        "mlflow_run_id",
        "trial_id",
        "error",
    ]
    first, second, third = records
    assert (first["status"], first["epochs"], first["seconds"]) == ("finished", 2, 12.3)
    assert first["param.choice"] == "0.1" and first["param.trees"] == "['form', 'x']"
    assert second["param.choice"] is None and second["param.kappa"] is None  # inactive
    assert third["clean_leaf"] is None and third["error"] == "boom"
    assert third["mlflow_run_id"] is None and third["trial_id"] == "c"


def test_summary_files_read_back_with_string_parameter_columns(tmp_path):
    records = summary_records(_summary_rows(), PARAMS)
    paths = write_summary(records, tmp_path / "report")
    assert paths == {
        "csv": tmp_path / "report" / "summary.csv",
        "parquet": tmp_path / "report" / "summary.parquet",
    }
    frame = pd.read_parquet(paths["parquet"])
    assert list(frame.columns) == list(records[0])
    assert list(frame["trial"]) == [0, 1, 2]
    assert list(frame["status"]) == ["finished", "pruned", "failed"]
    # A categorical with a number and a string, and None for inactive conditionals.
    assert _cells(frame["param.choice"]) == ["0.1", None, "a"]
    assert _cells(frame["param.optim.lr"]) == ["0.0005", "0.002", "0.001"]
    assert _cells(frame["param.kappa"]) == ["0.05", None, None]
    assert _cells(frame["param.trees"]) == ["['form', 'x']", None, None]
    assert frame["robust_leaf"].tolist() == [0.5, 0.2, 0.1]
    assert math.isnan(frame["clean_leaf"][2])
    csv = pd.read_csv(paths["csv"], dtype=str, keep_default_na=False)
    assert list(csv.columns) == list(frame.columns)
    assert list(csv["param.choice"]) == ["0.1", "", "a"]
    assert list(csv["mlflow_run_id"]) == ["run-a", "run-b", ""]
    assert list(csv["error"]) == ["", "", "boom"]


# -- plots ----------------------------------------------------------------------------------

DISTRIBUTIONS = {"x": FloatDistribution(0.0, 1.0), "y": CategoricalDistribution(["a", "b"])}


def _study(trials: int, objectives: int = 1, states: dict[int, TrialState] | None = None):
    rng = random.Random(0)
    study = optuna.create_study(directions=["maximize"] * objectives)
    for number in range(trials):
        params = {"x": rng.random(), "y": rng.choice(["a", "b"])}
        state = (states or {}).get(number, TrialState.COMPLETE)
        values = [params["x"] + rng.random() for _ in range(objectives)]
        study.add_trial(
            create_trial(
                values=values if state == TrialState.COMPLETE else None,
                state=state,
                params=params,
                distributions=DISTRIBUTIONS,
            )
        )
    return study


@pytest.fixture(scope="module", autouse=True)
def _matplotlib_loaded():
    # Importing matplotlib, Optuna's plots and its importance evaluator takes a second or two:
    # once, not in a test.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401
    import optuna.importance  # noqa: F401
    from optuna.visualization import matplotlib as _plots  # noqa: F401


def _assert_png(path) -> None:
    assert path.is_file() and path.stat().st_size > 100
    assert path.read_bytes()[:4] == PNG


def test_single_objective_plots_history_and_importances(tmp_path):
    written, notes = write_plots(_study(6), ["robust_leaf"], tmp_path / "plots")
    assert set(written) == {"history", "importances"}
    assert notes == []
    for name, path in written.items():
        assert path == tmp_path / "plots" / f"{name}.png"
        _assert_png(path)


def test_two_objectives_plot_each_history_and_the_pareto_front(tmp_path):
    written, notes = write_plots(_study(6, 2), ["robust_leaf", "clean_leaf"], tmp_path)
    assert set(written) == {"history-robust_leaf", "history-clean_leaf", "pareto", "importances"}
    assert notes == []
    for path in written.values():
        _assert_png(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{n}.png" for n in written)


def test_importances_need_two_complete_trials(tmp_path):
    # Six trials but one COMPLETE: the pruned and failed ones do not count.
    states = {n: TrialState.PRUNED if n % 2 else TrialState.FAIL for n in range(1, 6)}
    written, notes = write_plots(_study(6, states=states), ["robust_leaf"], tmp_path)
    assert set(written) == {"history"}
    _assert_png(written["history"])
    assert not (tmp_path / "importances.png").exists()
    assert notes == ["importances: not drawn (needs 2 finished trials)"]


def test_two_objectives_with_one_complete_trial_skip_only_importances(tmp_path):
    written, notes = write_plots(_study(1, 2), ["a", "b"], tmp_path)
    assert set(written) == {"history-a", "history-b", "pareto"}
    assert len(notes) == 1 and notes[0].startswith("importances: not drawn")


# -- console table --------------------------------------------------------------------------


def test_format_table_lists_trials_in_order_with_dashes_for_inactive_params():
    rows = [
        TrialRow(1, "b", "pruned", {"optim.lr": 0.002}, {"robust_leaf": 0.25}, epochs=1),
        TrialRow(
            0,
            "a",
            "finished",
            {"optim.lr": 0.000123456, "kappa": 0.05},
            {"robust_leaf": 0.5, "transfer": math.nan, "extra": 1.0},
            epochs=2,
        ),
    ]
    lines = format_table(rows, ["optim.lr", "kappa"], ["robust_leaf"]).splitlines()
    assert lines[0].split() == ["trial", "status", "epochs", "optim.lr", "kappa"] + [
        "robust_leaf",
        "transfer",
    ]  # shown metrics: the objectives, then the usual ones some trial reported
    assert lines[1].split() == ["0", "finished", "2", "0.0001235", "0.05", "0.5", "nan"]
    assert lines[2].split() == ["1", "pruned", "1", "0.002", "-", "0.25", "-"]
    assert len({len(line) for line in lines}) == 1  # fixed width, right-aligned


def test_describe_params_is_one_line_of_name_value_pairs():
    text = describe_params({"trees": "form+corners", "depth.form": 2, "optim.lr": 0.00031234})
    assert text == "trees=form+corners depth.form=2 optim.lr=0.0003123"
