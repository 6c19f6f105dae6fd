"""The search-space loader: sampling through real Optuna trials, conditions, and every check."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
import yaml

from raysearch.spaces import load_space
from trainables.errors import UserInputError

SHIPPED = Path(__file__).resolve().parents[2] / "search_spaces"

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _write(tmp_path: Path, space: dict, **top) -> Path:
    data = {
        "name": "t",
        "base": str(SHIPPED / "embedded-experiment.yaml"),
        "objective": {"metric": "robust_leaf", "mode": "max"},
        "budget": {"trials": 2},
        "space": space,
    }
    data.update(top)
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _trials(space, count: int):
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    for _ in range(count):
        trial = study.ask()
        params = space.suggest(trial)
        study.tell(trial, 0.0)
        yield trial, params


# -- sampling ---------------------------------------------------------------------------------

EVERY_TYPE = {
    "loss.negatives": {"type": "categorical", "choices": ["none", "up", "down", "both"]},
    "attack.steps": {"type": "int", "low": 1, "high": 5, "step": 2},
    "optim.warmup_steps": {"type": "int", "low": 1, "high": 64, "log": True},
    "optim.lr": {"type": "float", "low": 1e-4, "high": 2e-3, "log": True},
    "head.temperature": {"type": "float", "low": 0.1, "high": 0.5, "step": 0.1},
    "loss.margins.base": {"type": "float", "low": 0.0, "high": 0.5},
    "attack.eps": {"type": "fixed", "value": 0.0156862745},
}


def test_every_distribution_samples_in_range(tmp_path):
    space = load_space(_write(tmp_path, EVERY_TYPE))
    seen_lr = []
    for trial, params in _trials(space, 25):
        assert params["loss.negatives"] in ("none", "up", "down", "both")
        assert params["attack.steps"] in (1, 3, 5)
        assert isinstance(params["optim.warmup_steps"], int)
        assert 1 <= params["optim.warmup_steps"] <= 64
        assert 1e-4 <= params["optim.lr"] <= 2e-3
        seen_lr.append(params["optim.lr"])
        temperature = params["head.temperature"]
        assert 0.1 - 1e-9 <= temperature <= 0.5 + 1e-9
        assert math.isclose(round(temperature * 10), temperature * 10, abs_tol=1e-9)
        assert 0.0 <= params["loss.margins.base"] <= 0.5
        assert params["attack.eps"] == 0.0156862745
        assert "attack.eps" not in trial.params  # fixed: returned, never sampled
    distribution = trial.distributions["optim.lr"]
    assert distribution.log and trial.distributions["optim.warmup_steps"].log
    assert trial.distributions["attack.steps"].step == 2
    assert len(set(seen_lr)) > 5


def test_kappa_only_when_shape_is_theorem(tmp_path):
    space = load_space(
        _write(
            tmp_path,
            {
                "loss.margins.shape": {
                    "type": "categorical",
                    "choices": ["constant", "linear", "geometric", "theorem"],
                },
                "loss.margins.kappa": {
                    "type": "float",
                    "low": 0.01,
                    "high": 0.2,
                    "when": {"loss.margins.shape": "theorem"},
                },
                "loss.margins.ratio": {
                    "type": "float",
                    "low": 0.3,
                    "high": 0.9,
                    "when": {"loss.margins.shape": ["geometric", "linear"]},
                },
            },
        )
    )
    shapes = set()
    for trial, params in _trials(space, 40):
        shape = params["loss.margins.shape"]
        shapes.add(shape)
        assert ("loss.margins.kappa" in params) == (shape == "theorem")
        assert ("loss.margins.kappa" in trial.params) == (shape == "theorem")
        assert ("loss.margins.ratio" in params) == (shape in ("geometric", "linear"))
    assert shapes == {"constant", "linear", "geometric", "theorem"}


def test_trees_subset_and_depths_are_real_conditionals(tmp_path):
    space = load_space(
        _write(
            tmp_path,
            {
                "trees": {
                    "type": "subset",
                    "of": ["form", "symmetry", "corners"],
                    "min": 1,
                    "max": 2,
                },
                "depth": {
                    "type": "int",
                    "low": 1,
                    "high": 2,
                    "per_tree": {"form": {"low": 2, "high": 3}},
                },
            },
        )
    )
    sizes = set()
    for trial, params in _trials(space, 30):
        trees = params["method.trees"]
        sizes.add(len(trees))
        assert 1 <= len(trees) <= 2 and len(set(trees)) == len(trees)
        depth_names = {name for name in trial.params if name.startswith("depth.")}
        assert depth_names == {f"depth.{tree}" for tree in trees}
        assert len(params["method.depths"]) == len(trees)
        for tree, depth in zip(trees, params["method.depths"], strict=True):
            assert (2 <= depth <= 3) if tree == "form" else (1 <= depth <= 2)
        space.config_for(params)  # every sample is a valid config
    assert sizes == {1, 2}


def test_depth_without_trees_uses_the_base_trees(tmp_path):
    space = load_space(_write(tmp_path, {"depth": {"type": "int", "low": 1, "high": 2}}))
    _, params = next(_trials(space, 1))
    assert params["method.trees"] == ["form", "symmetry", "corners"]
    assert all(1 <= depth <= 2 for depth in params["method.depths"])


def test_config_for_sets_the_suggested_values():
    space = load_space(SHIPPED / "demo.yaml")
    for _, params in _trials(space, 8):
        config = space.config_for(params)
        assert list(config.method.trees) == params["method.trees"]
        assert list(config.method.depths) == params["method.depths"]
        margins = config.method.loss.margins
        assert margins.shape == params["loss.margins.shape"]
        assert margins.base == params["loss.margins.base"]
        if "loss.margins.kappa" in params:
            assert margins.kappa == params["loss.margins.kappa"]
        assert config.method.head.temperature == params["head.temperature"]
        assert config.optim.lr == params["optim.lr"]
        assert config.optim.epochs == 2  # the space's overrides stay applied


@pytest.mark.parametrize("name", ["demo", "paper", "baselines"])
def test_shipped_spaces_load(name):
    space = load_space(SHIPPED / f"{name}.yaml")
    assert space.name == name
    assert space.budget.trials >= 1
    assert space.metrics[0] in ("robust_leaf", "zeroshot_robust")  # validation metrics
    assert space.multi_objective == (len(space.metrics) == 2)
    assert set(space.modes) == {"max"}


def test_paper_space_is_the_paper_setting():
    space = load_space(SHIPPED / "paper.yaml")
    base = space.base
    assert (base.model.name, base.model.pretrained) == ("ViT-B-32", "openai")
    assert math.isclose(base.method.attack.eps, 1 / 255) and base.method.attack.steps == 3
    assert base.method.attack.strategy == "universal" and base.method.attack.text_eps == 2e-4
    assert (base.optim.optimizer, base.optim.lr, base.optim.weight_decay) == ("adamw", 1e-5, 1e-4)
    assert (base.optim.batch_size, base.optim.epochs) == (256, 10)
    assert (base.scaling.workers, base.scaling.gpus_per_worker) == (4, 1)
    assert (base.data.dataset, base.optim.precision) == ("imagenet1k", "bf16")
    trees = ["imagenet1k-wordnet", "imagenet1k-wordnet-balanced"]
    assert list(base.data.trees) == trees
    assert space.params[0].kind == "subset"
    assert set(space.params[0].choices) == {*trees, "+".join(trees)}
    # Selected on the zero-shot suite's validation split, evaluated after every epoch for ASHA.
    assert base.data.zeroshot_suite == "tecoa16" and base.data.zeroshot_every_epoch
    assert space.metrics == ["zeroshot_robust", "zeroshot_clean"]


def test_baselines_follow_the_method_defaults():
    space = load_space(SHIPPED / "baselines.yaml")
    assert space.params[0].choices == ("tecoa", "pmg", "fare", "hrz-forest")
    assert space.config_for({"method.name": "tecoa"}).method.head.geometry == "euclidean"
    assert space.config_for({"method.name": "hrz-forest"}).method.head.geometry == "hyperbolic"


# -- bad spaces: one line, naming the field -------------------------------------------------

LR = {"type": "float", "low": 1e-4, "high": 2e-3}
BAD_SPACES = [
    ({"optim.lr": LR}, {"extra": 1}, "`extra` must be one of the keys"),
    ({"optim.nope": LR}, {}, "`space.optim.nope` must be a setting of the experiment config"),
    ({"method.trees": LR}, {}, "`space` must be the parameter `trees`"),
    ({"optim.lr": {"type": "beta", "low": 0, "high": 1}}, {}, "`space.optim.lr.type` must be"),
    (
        {"loss.negatives": {"type": "categorical", "choices": []}},
        {},
        "`space.loss.negatives.choices` must be a non-empty list",
    ),
    ({"optim.lr": {"type": "float", "low": 0.1, "high": 0.01}}, {}, "`space.optim.lr.low` must"),
    (
        {"optim.lr": {"type": "float", "low": 0.0, "high": 0.01, "log": True}},
        {},
        "`space.optim.lr.low` must be > 0 when log is true",
    ),
    (
        {"attack.steps": {"type": "int", "low": 1.5, "high": 3}},
        {},
        "`space.attack.steps.low` must be an integer",
    ),
    (
        {"attack.steps": {"type": "int", "low": 1, "high": 4, "step": 2}},
        {},
        "`space.attack.steps.high` must be low + a multiple of step",
    ),
    (
        {"optim.lr": {"type": "float", "low": 1e-4, "high": 2e-3, "step": 1e-4, "log": True}},
        {},
        "`space.optim.lr.step` must be null when log is true",
    ),
    (
        {"optim.lr": {"type": "float", "low": 1e-4, "high": 2e-3, "stepp": 1}},
        {},
        "`space.optim.lr.stepp` must be one of the keys",
    ),
    (
        {"loss.margins.kappa": {"type": "float", "low": 0.1, "high": 2.0}},
        {},
        "`space.loss.margins.kappa.high` must be a number in [0, 1]",
    ),
    (
        {"loss.margins.shape": {"type": "categorical", "choices": ["constant", "cubic"]}},
        {},
        "`space.loss.margins.shape.choices` must be one of",
    ),
    (
        {
            "optim.lr": {**LR, "when": {"loss.margins.shape": "theorem"}},
            "loss.margins.shape": {"type": "categorical", "choices": ["theorem"]},
        },
        {},
        "`space.optim.lr.when` must be a parameter defined earlier",
    ),
    (
        {
            "loss.margins.shape": {"type": "categorical", "choices": ["theorem"]},
            "optim.lr": {**LR, "when": {"loss.margins.shape": "linear"}},
        },
        {},
        "`space.optim.lr.when.loss.margins.shape` must be among the choices",
    ),
    (
        {"depth": {"type": "int", "low": 1, "high": 3}},
        {},
        "`space.depth.high` must be an integer in [1, 2], the depth of tree `symmetry`",
    ),
    (
        {
            "trees": {"type": "subset", "of": ["form"]},
            "depth": {"type": "int", "high": 2, "per_tree": {"corners": {"high": 1}}},
        },
        {},
        "`space.depth.per_tree` must be names of the candidate trees",
    ),
    (
        {
            "depth": {"type": "int", "low": 1, "high": 1},
            "trees": {"type": "subset", "of": ["form"]},
        },
        {},
        "`space.depth` must be after `trees`",
    ),
    (
        {"trees": {"type": "subset", "of": ["form", "leaves"]}},
        {},
        "`space.trees.of` must be names of trees in [form, symmetry, corners]",
    ),
    (
        {"trees": {"type": "subset", "of": ["form", "corners"], "min": 0}},
        {},
        "`space.trees.min` must be an integer in [1, 2]",
    ),
    (
        {"trees": {"type": "subset", "of": ["form", "corners"], "max": 3}},
        {},
        "`space.trees.max` must be an integer in [1, 2]",
    ),
    (
        {"optim.lr": LR},
        {"objective": {"metric": "accuracy", "mode": "max"}},
        "`objective.metric` must be a reported metric",
    ),
    (
        {"optim.lr": LR},
        {"objective": {"metric": "clean/form/9", "mode": "max"}},
        "`objective.metric` must be a reported metric",
    ),
    (
        {"optim.lr": LR},
        {"objective": {"metric": "loss", "mode": "up"}},
        "`objective.mode` must be one of ['max', 'min']",
    ),
    (
        {"optim.lr": LR},
        {"objective": [{"metric": m, "mode": "max"} for m in ("loss", "transfer", "clean_leaf")]},
        "`objective` must be one or two objectives",
    ),
    ({"optim.lr": LR}, {"budget": {"trials": 0}}, "`budget.trials` must be an integer >= 1"),
    ({"optim.lr": LR}, {"budget": {"concurrency": 0}}, "`budget.concurrency` must be an integer"),
    ({"optim.lr": LR}, {"budget": {"scheduler": "pbt"}}, "`budget.scheduler` must be one of"),
    ({"optim.lr": LR}, {"budget": {"grace_epochs": 0}}, "`budget.grace_epochs` must be an integer"),
    ({"optim.lr": LR}, {"base": "missing.yaml"}, "`base` must be an existing config file"),
    ({"optim.lr": LR}, {"name": "a b"}, "`name` must be 1 to 64 characters"),
    (
        {"scaling.workers": {"type": "int", "low": 1, "high": 2}},
        {},
        "`space.scaling.workers` must be set in the base config or overrides",
    ),
]


@pytest.mark.parametrize(("space", "top", "prefix"), BAD_SPACES)
def test_bad_spaces_fail_with_one_line(tmp_path, space, top, prefix):
    with pytest.raises(UserInputError) as caught:
        load_space(_write(tmp_path, space, **top))
    message = str(caught.value)
    assert message.startswith(prefix), message
    assert "\n" not in message


def test_metrics_of_the_base_forest_are_accepted(tmp_path):
    space = load_space(
        _write(
            tmp_path,
            {"optim.lr": LR},
            objective=[
                {"metric": "clean/form/3", "mode": "max"},
                {"metric": "loss", "mode": "min"},
            ],
        )
    )
    assert space.metrics == ["clean/form/3", "loss"]
    assert space.directions == ["maximize", "minimize"]
    assert space.multi_objective


# -- budget -----------------------------------------------------------------------------------


def test_reduction_factor_defaults_to_three_and_must_be_at_least_two(tmp_path):
    assert load_space(_write(tmp_path, {"optim.lr": LR})).budget.reduction_factor == 3
    space = load_space(_write(tmp_path, {"optim.lr": LR}, budget={"reduction_factor": 2}))
    assert space.budget.reduction_factor == 2
    for bad in (1, 0, 2.5, True, "3"):
        with pytest.raises(UserInputError) as caught:
            load_space(_write(tmp_path, {"optim.lr": LR}, budget={"reduction_factor": bad}))
        message = str(caught.value)
        assert message.startswith("`budget.reduction_factor` must be an integer >= 2"), message


def test_concurrency_may_be_auto_but_no_other_word(tmp_path):
    space = load_space(_write(tmp_path, {"optim.lr": LR}, budget={"concurrency": "auto"}))
    assert space.budget.concurrency == "auto"
    assert load_space(_write(tmp_path, {"optim.lr": LR})).budget.concurrency == 1
    with pytest.raises(UserInputError) as caught:
        load_space(_write(tmp_path, {"optim.lr": LR}, budget={"concurrency": "many"}))
    message = str(caught.value)
    assert message.startswith("`budget.concurrency` must be an integer >= 1")
    assert '"auto"' in message and "'many'" in message


@pytest.mark.parametrize("metric", ["transfer", "worst_superclass", "zeroshot_robust"])
def test_asha_refuses_a_first_objective_measured_only_after_the_last_epoch(tmp_path, metric):
    first = {"metric": metric, "mode": "max"}
    for budget in ({"trials": 2}, {"scheduler": "asha"}):  # asha is the default
        with pytest.raises(UserInputError) as caught:
            load_space(_write(tmp_path, {"optim.lr": LR}, objective=first, budget=budget))
        message = str(caught.value)
        assert message.startswith("`budget.scheduler` must be none when the first objective")
        assert metric in message and "\n" not in message
    space = load_space(
        _write(tmp_path, {"optim.lr": LR}, objective=first, budget={"scheduler": "none"})
    )
    assert space.metrics == [metric] and space.budget.scheduler == "none"


def test_a_final_only_metric_may_be_the_second_objective_under_asha(tmp_path):
    objectives = [{"metric": "robust_leaf", "mode": "max"}, {"metric": "transfer", "mode": "max"}]
    space = load_space(_write(tmp_path, {"optim.lr": LR}, objective=objectives))
    assert space.budget.scheduler == "asha" and space.metrics == ["robust_leaf", "transfer"]


# -- selection reads validation -----------------------------------------------------------------


@pytest.mark.parametrize("metric", ["test/robust_leaf", "test/zeroshot_robust", "test/clean_leaf"])
def test_a_test_split_metric_is_never_an_objective(tmp_path, metric):
    with pytest.raises(UserInputError) as caught:
        load_space(_write(tmp_path, {"optim.lr": LR}, objective={"metric": metric, "mode": "max"}))
    message = str(caught.value)
    assert message.startswith("`objective.metric` must be a validation metric")
    assert metric in message


def test_zero_shot_objectives_need_a_suite_and_run_under_asha_when_measured_every_epoch(tmp_path):
    objectives = [
        {"metric": "zeroshot_robust", "mode": "max"},
        {"metric": "zeroshot/embedded-colour/clean", "mode": "max"},
    ]
    every_epoch = ["data.zeroshot_every_epoch=true"]
    space = load_space(
        _write(tmp_path, {"optim.lr": LR}, objective=objectives, overrides=every_epoch)
    )
    assert space.budget.scheduler == "asha"
    assert space.base.data.zeroshot_suite == "embedded-zeroshot"
    with pytest.raises(UserInputError, match="zeroshot_\\* need data.zeroshot_suite"):
        load_space(
            _write(
                tmp_path,
                {"optim.lr": LR},
                objective=objectives,
                overrides=["data.zeroshot_suite=null"],
            )
        )


def test_the_demo_trades_zero_shot_robustness_against_validation_accuracy():
    space = load_space(SHIPPED / "demo.yaml")
    assert space.metrics == ["zeroshot_robust", "clean_leaf"]
    assert space.base.data.zeroshot_every_epoch and space.budget.scheduler == "asha"
