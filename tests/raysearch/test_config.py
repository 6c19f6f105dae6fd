"""The experiment config: loading, overrides, method defaults, round trips and one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from raysearch.config import (
    ExperimentConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    dump_config,
    flatten,
    job_name,
    load_config,
    parse_override,
    read_config_dict,
    validate_with_data,
)
from trainables.errors import UserInputError
from trainables.hierarchy import load_shipped, save

EXAMPLE = Path(__file__).parents[2] / "search_spaces" / "embedded-experiment.yaml"


def error_of(overrides=(), *, path=None, data_check=False) -> str:
    """The one-line message of loading (and, with ``data_check``, validating) a config."""
    with pytest.raises(UserInputError) as caught:
        config = load_config(path, overrides)
        if data_check:
            validate_with_data(config)
    message = str(caught.value)
    assert "\n" not in message
    return message


# -- loading ---------------------------------------------------------------------------------


def test_importing_the_module_does_not_import_torch():
    code = "import sys, raysearch.config; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_defaults_load():
    config = load_config(None)
    assert config == ExperimentConfig()
    assert config.method.name == "hrz-forest"
    assert config.method.head.geometry == "hyperbolic"
    assert config.method.head.train_text_projection
    assert config.method.attack.strategy == "universal"
    assert config.data.trees == "embedded"
    assert config.data.eval_samples == 1000
    assert (config.scaling.workers, config.checkpoint.keep, config.mlflow.experiment) == (
        1,
        2,
        "raysearch",
    )
    assert validate_with_data(config).names == ("form", "symmetry", "corners")


def test_the_shipped_example_loads_and_validates():
    config = load_config(EXAMPLE)
    assert config.method.name == "hrz-forest"
    assert (config.optim.epochs, config.optim.batch_size, config.scaling.workers) == (2.0, 128, 1)
    assert config.method.attack.eps == pytest.approx(4 / 255)
    forest = validate_with_data(config)
    assert forest.depths == {"form": 3, "symmetry": 2, "corners": 2}


def test_an_empty_file_gives_the_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing set\n")
    assert load_config(path) == ExperimentConfig()


def test_an_empty_section_keeps_its_defaults():
    assert config_from_dict({"head": None, "optim": {}}) == ExperimentConfig()


# -- overrides -------------------------------------------------------------------------------


def test_overrides_of_every_kind(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model:\n  pretrained: weights.safetensors\noptim:\n  lr: 0.1\n")
    config = load_config(
        path,
        [
            "optim.lr=1e-3",  # a number without a dot: YAML 1.1 would read a string
            "optim.batch_size=64",
            "method.trees=[form, corners]",
            "method.depths=[2,1]",
            "model.pretrained=null",
            "loss.margins.shape=linear",
            "head.learn_curvature=true",
            "mlflow.experiment=ablation",
            "method.templates=['a drawing of a {}.', 'a {}.']",
        ],
    )
    assert config.optim.lr == 1e-3 and isinstance(config.optim.lr, float)
    assert config.optim.batch_size == 64
    assert config.method.trees == ("form", "corners")
    assert config.method.depths == (2, 1)
    assert config.model.pretrained is None
    margins = config.method.loss.margins
    # Only the shape changes; the rest of the default (base 0: implicit margins) stays.
    assert (margins.shape, margins.base, margins.kappa) == ("linear", 0.0, 0.1)
    assert config.method.head.learn_curvature is True
    assert config.mlflow.experiment == "ablation"
    assert config.method.templates == ("a drawing of a {}.", "a {}.")
    forest = validate_with_data(config)
    assert forest.names == ("form", "symmetry", "corners")


def test_a_later_override_wins_and_values_may_hold_equals_signs():
    config = load_config(None, ["optim.lr=0.1", "optim.lr=0.2", "method.templates=['a={}']"])
    assert config.optim.lr == 0.2
    assert config.method.templates == ("a={}",)


def test_a_mapping_override_and_a_single_item_list():
    config = load_config(
        None, ["loss.margins={shape: geometric, ratio: 0.25}", "method.trees=form"]
    )
    assert (config.method.loss.margins.shape, config.method.loss.margins.ratio) == (
        "geometric",
        0.25,
    )
    assert config.method.trees == ("form",)


def test_an_integer_is_accepted_for_a_float():
    config = load_config(None, ["optim.epochs=3", "scaling.cpus_per_worker=2"])
    assert config.optim.epochs == 3.0 and isinstance(config.optim.epochs, float)
    assert isinstance(config.scaling.cpus_per_worker, float)


def test_parse_override_and_apply_overrides():
    assert parse_override("optim.lr=1e-3") == ("optim.lr", 0.001)
    assert parse_override("model.pretrained=") == ("model.pretrained", None)
    data = {"optim": {"lr": 0.1}}
    updated = apply_overrides(data, {"optim.lr": 0.2, "loss.margins.base": 0.5})
    assert updated == {"optim": {"lr": 0.2}, "loss": {"margins": {"base": 0.5}}}
    assert data == {"optim": {"lr": 0.1}}  # the input is not changed


def test_read_config_dict_keeps_the_raw_mapping():
    assert read_config_dict(None, ["method.name=tecoa"]) == {"method": {"name": "tecoa"}}


def test_the_seed_seeds_the_optimiser_and_the_evaluation():
    config = load_config(None, ["seed=7"])
    assert (config.seed, config.optim.seed, config.evaluation.seed) == (7, 7, 7)


@pytest.mark.parametrize("seed", ["-1", str(2**32), str(2**64), "true"])
def test_a_seed_torch_and_numpy_cannot_take_is_refused_before_any_work(seed):
    assert error_of([f"seed={seed}"]).startswith("`seed` must be an integer")


def test_the_largest_seed_is_accepted():
    assert load_config(None, [f"seed={2**32 - 1}"]).optim.seed == 2**32 - 1


@pytest.mark.parametrize("name", ["..", ".", "../elsewhere", ".hidden"])
def test_a_job_name_that_is_not_one_plain_folder_is_refused(name):
    assert error_of([f"name={name}"]).startswith("`name` must be 1 to 64 characters")


# -- method defaults -------------------------------------------------------------------------


def test_method_defaults_follow_the_method_name():
    config = load_config(None, ["method.name=tecoa"])
    assert config.method.head.geometry == "euclidean"
    assert not config.method.head.train_text_projection
    assert config.method.attack.strategy == "leaf"
    assert config.method.attack.text_eps == 0.0


def test_user_fields_win_over_method_defaults():
    config = load_config(
        None, ["method.name=tecoa", "head.temperature=0.1", "attack.eps=0.01", "attack.steps=3"]
    )
    assert config.method.head.geometry == "euclidean"  # still the method's
    assert config.method.head.temperature == 0.1
    assert config.method.attack.strategy == "leaf"  # still the method's
    assert (config.method.attack.eps, config.method.attack.steps) == (0.01, 3)
    hyperbolic = load_config(None, ["method.name=tecoa", "head.geometry=hyperbolic"])
    assert hyperbolic.method.head.geometry == "hyperbolic"


def test_hrz_with_one_cut_tree_validates():
    config = load_config(None, ["method.name=hrz", "method.trees=[symmetry]", "method.depths=[1]"])
    assert validate_with_data(config).names == ("form", "symmetry", "corners")


# -- writing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["method.name=tecoa", "head.temperature=0.1", "seed=3", "name=tecoa-run.1"],
        ["method.trees=[form]", "method.depths=[2]", "loss.margins.base=0", "optim.max_steps=5"],
        ["data.dataset=cifar100", "data.root=/data", "scaling.gpus_per_worker=0.5"],
    ],
)
def test_round_trip(overrides, tmp_path):
    config = load_config(None, overrides)
    data = config_to_dict(config)
    assert config_from_dict(data) == config
    assert yaml.safe_load(yaml.safe_dump(data)) == data  # plain YAML types only
    path = tmp_path / "dumped.yaml"
    path.write_text(dump_config(config))
    assert load_config(path) == config


def test_the_dict_has_the_yaml_layout():
    data = config_to_dict(load_config(None))
    assert list(data) == [
        "name",
        "seed",
        "method",
        "head",
        "loss",
        "attack",
        "optim",
        "evaluation",
        "data",
        "model",
        "scaling",
        "checkpoint",
        "mlflow",
    ]
    assert set(data["method"]) == {"name", "trees", "depths", "templates"}
    assert "seed" not in data["optim"] and "seed" not in data["evaluation"]
    assert data["method"]["templates"] == ["a photo of a {}."]


def test_flatten_gives_dotted_keys_and_scalar_values():
    config = load_config(None, ["method.trees=[form, corners]", "method.depths=[2, 1]"])
    flat = flatten(config)
    assert flat["optim.lr"] == config.optim.lr
    assert flat["loss.margins.shape"] == "constant" and flat["loss.margins.base"] == 0.0
    assert flat["data.trees"] == "embedded"
    assert flat["model.pretrained"] is None
    assert flat["method.trees"] == "[form, corners]"
    for key, value in flat.items():
        assert isinstance(value, (str, int, float, bool, type(None))), key
        assert key == "name" or key == "seed" or "." in key
    # Every entry is also a valid override that gives back the same config.
    overrides = [f"{key}={'null' if value is None else value}" for key, value in flat.items()]
    assert load_config(None, overrides) == config


def test_job_name_is_stable_and_follows_the_content():
    config = load_config(None)
    assert job_name(config) == job_name(load_config(None))
    assert job_name(config).startswith("hrz-forest-")
    assert job_name(load_config(None, ["optim.lr=1e-3"])) != job_name(config)
    assert job_name(load_config(None, ["name=my-run_1.2"])) == "my-run_1.2"


def test_resolved_locations(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = load_config(None)
    assert config.mlflow.resolved_tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert config.checkpoint.resolved_storage_path() == str(tmp_path.resolve() / "ray_results")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert config.mlflow.resolved_tracking_uri() == "http://mlflow:5000"
    remote = load_config(None, ["checkpoint.storage_path=s3://bucket/runs"])
    assert remote.checkpoint.resolved_storage_path() == "s3://bucket/runs"


# -- trees from the data ---------------------------------------------------------------------


def test_tree_files_and_shipped_trees_make_the_forest(tmp_path):
    shipped = load_shipped("embedded")
    files = [str(save(shipped[name], tmp_path / f"{name}.json")) for name in ("corners", "form")]
    config = load_config(None, [f"data.trees=[{files[0]}, {files[1]}]"])
    assert validate_with_data(config).names == ("corners", "form")
    one = load_config(None, ["data.trees=embedded/form", "method.name=hrz"])
    assert validate_with_data(one).names == ("form",)


def test_the_default_trees_follow_the_dataset():
    cifar10 = load_config(None, ["data.dataset=cifar10", "method.name=tecoa"])
    assert cifar10.data.trees == "cifar10-wordnet"
    forest = validate_with_data(cifar10)  # needs the trees only, not the images
    assert forest.leaves[:2] == ("airplane", "automobile")
    cifar100 = load_config(None, ["data.dataset=cifar100"])
    assert validate_with_data(cifar100).names == ("cifar100-wordnet", "cifar100-coarse")


# -- one error per bad field -----------------------------------------------------------------


def test_unknown_top_level_key():
    assert error_of(["lrr=1"]).startswith(
        "`lrr` must be one of the settings [attack, checkpoint, data, evaluation, head, loss, "
        "method, mlflow, model, name, optim, scaling, seed], but got 'lrr'."
    )


def test_unknown_nested_key():
    assert error_of(["optim.lrr=1"]) == (
        "`optim.lrr` must be one of the settings [batch_size, epochs, lr, max_steps, momentum, "
        "optimizer, precision, warmup_steps, weight_decay], but got 'lrr'."
    )
    assert error_of(["loss.margins.size=1"]).startswith(
        "`loss.margins.size` must be one of the settings [base, kappa, ratio, shape, "
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optim.lr=fast"], "`optim.lr` must be a number, but got 'fast'."),
        (["optim.epochs=true"], "`optim.epochs` must be a number, but got True."),
        (["optim.batch_size=64.0"], "`optim.batch_size` must be an integer, but got 64.0."),
        (["optim.batch_size=true"], "`optim.batch_size` must be an integer, but got True."),
        (["head.learn_scales=1"], "`head.learn_scales` must be true or false, but got 1."),
        (["model.name=12"], "`model.name` must be a string, but got 12."),
        (["method.trees=[1, 2]"], "`method.trees` must be a list of strings or null, but got"),
        (["data.trees={a: 1}"], "`data.trees` must be a string, a list of strings or null, but"),
        (["optim.max_steps=lots"], "`optim.max_steps` must be an integer or null, but got"),
        (["head=5"], "`head` must be a mapping of settings, but got 5."),
        (["seed=1.5"], "`seed` must be an integer, but got 1.5."),
    ],
)
def test_wrong_type(overrides, message):
    assert error_of(overrides).startswith(message)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["attack.eps=0"], "`attack.eps` must be > 0, but got 0.0."),
        (["evaluation.eps=-0.01"], "`evaluation.eps` must be > 0, but got -0.01."),
        (["evaluation.steps=0"], "`evaluation.steps` must be >= 1, but got 0."),
        (["evaluation.norm=l3"], "`evaluation.norm` must be one of ['linf', 'l2'], but got"),
        (["head.temperature=0"], "`head.temperature` must be > 0, but got 0.0."),
        (["optim.optimizer=adam"], "`optim.optimizer` must be one of ['adamw', 'sgd'], but got"),
        (["loss.vic_weight=-1"], "`loss.vic_weight` must be a finite number >= 0, but got -1.0."),
        (["loss.margins.shape=square"], "`loss.margins.shape` must be one of ['constant', "),
        (["scaling.workers=0"], "`scaling.workers` must be >= 1, but got 0."),
        (["scaling.gpus_per_worker=-1"], "`scaling.gpus_per_worker` must be >= 0, but got -1.0."),
        (["checkpoint.keep=0"], "`checkpoint.keep` must be >= 1, but got 0."),
        (["data.dataset=mnist"], "`data.dataset` must be one of ['embedded', 'embedded-world', "),
        (["data.eval_samples=0"], "`data.eval_samples` must be >= 1, but got 0."),
        (["data.train_size=100"], "`data.train_size` must be >= optim.batch_size (128) or null"),
        (["scaling.workers=4", "optim.batch_size=2"], "`optim.batch_size` must be >= scaling."),
        (["method.depths=[2]"], "`method.depths` must be one depth per tree of method.trees"),
        (["method.templates=[a photo]"], "`method.templates` must be a non-empty list of strings"),
        (["name=my run"], "`name` must be 1 to 64 characters from A-Z a-z 0-9 . _ -, starting"),
        (["name=" + "x" * 65], "`name` must be 1 to 64 characters"),
    ],
)
def test_bad_value(overrides, message):
    assert error_of(overrides).startswith(message)


def test_unknown_method_name():
    assert error_of(["method.name=tecoaa"]) == (
        "`method.name` must be one of ['clip', 'tecoa', 'pmg', 'fare', 'hrz', 'hrz-forest'], "
        "but got 'tecoaa'."
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optim.seed=3"], "`optim.seed` must be set as the top-level `seed`"),
        (["evaluation.seed=3"], "`evaluation.seed` must be set as the top-level `seed`"),
        (["evaluation.samples=10"], "`evaluation.samples` must be set as `data.eval_samples`"),
        (
            ["method.head.temperature=1"],
            "`method.head` must be set in the top-level section `head`",
        ),
    ],
)
def test_a_field_set_elsewhere_says_where(overrides, message):
    assert error_of(overrides).startswith(message)


def test_empty_tree_set():
    assert error_of(["method.trees=[]"]) == (
        "`method.trees` must be a non-empty list of tree names, but got []."
    )
    assert error_of(["data.trees=[]"]).startswith("`data.trees` must be a shipped tree name or")


def test_duplicate_trees():
    assert error_of(["method.trees=[form, form]"]).startswith(
        "`method.trees` must be distinct tree names, but got ['form', 'form']."
    )


def test_unknown_tree():
    assert error_of(["method.trees=[form, shape]"], data_check=True) == (
        "`method.trees` must be names of trees in [form, symmetry, corners], but got 'shape'."
    )


def test_depth_larger_than_the_tree():
    overrides = ["method.trees=[form, corners]", "method.depths=[3, 7]"]
    assert error_of(overrides, data_check=True) == (
        "`method.depths` must be between 1 and 2 for tree `corners`, but got 7."
    )
    overrides = ["method.trees=[form]", "method.depths=[0]"]
    assert error_of(overrides, data_check=True).startswith("`method.depths` must be between 1")


def test_unknown_data_trees():
    assert error_of(["data.trees=nope"], data_check=True).startswith(
        "`data.trees` must be shipped trees (embedded, embedded-heldout-shapes, cifar10-wordnet, "
    )


def test_trees_of_another_dataset():
    assert error_of(["data.trees=cifar10-wordnet"], data_check=True).startswith(
        "`data.trees` must be trees whose leaves are the 20 classes of embedded, but got "
        "'cifar10-wordnet'."
    )


@pytest.mark.parametrize("text", ["optim.lr", "=3", "optim lr=3", "optim..lr=3"])
def test_bad_override_syntax(text):
    assert error_of([text]) == f"`override` must be of the form key=value, but got {text!r}."


def test_an_override_value_that_is_not_yaml():
    assert error_of(["method.trees=[form"]) == (
        "`method.trees` must be a YAML value, but got '[form'."
    )


def test_yaml_that_is_not_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- method\n- optim\n")
    assert error_of(path=path) == (
        "`config` must be a mapping of sections such as method, optim and data, "
        "but got ['method', 'optim']."
    )
    with pytest.raises(UserInputError, match=r"^`config` must be a mapping of settings"):
        config_from_dict(["method"])


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    assert error_of(path=missing) == f"`config` must be an existing YAML file, but got '{missing}'."


def test_invalid_yaml_and_repeated_keys(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  lr: [1\n")
    assert error_of(path=path).startswith("`config` must be valid YAML, but got <")
    path.write_text("optim:\n  lr: 0.1\n  lr: 0.2\n")
    assert error_of(path=path).startswith(
        "`config` must be YAML with each key once per section, but got <`lr` repeated at line 3"
    )


def test_an_alias_bomb_is_refused_before_it_expands(tmp_path):
    import time

    lines = ['a0: ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, 10):  # 10**9 strings once expanded
        lines.append(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * 10) + "]")
    lines[0] = lines[0].replace("a0:", "a0: &a0")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    started = time.perf_counter()
    message = error_of(path=path)
    assert time.perf_counter() - started < 5
    assert message.startswith("`config` must be YAML that expands to at most 100,000 nodes")
    with pytest.raises(UserInputError, match="expands to at most"):
        parse_override("x={" + ", ".join(lines) + "}")


def test_aliases_within_the_limit_still_work(tmp_path):
    path = tmp_path / "merge.yaml"
    path.write_text("defaults: &d {lr: 0.001}\noptim:\n  <<: *d\n  lr: 0.002\n")
    data = read_config_dict(path)
    assert data["optim"]["lr"] == 0.002


def test_yaml_nested_thousands_deep_is_one_line(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("a: " + "[" * 20_000 + "]" * 20_000 + "\n")
    assert error_of(path=path).startswith("`config` must be YAML nested at most")


# -- weights files are checked before any work -----------------------------------------------


def test_a_pickled_or_damaged_weights_file_is_refused_before_any_work(tmp_path):
    import pickle

    pickled = tmp_path / "model.pt"
    pickled.write_bytes(pickle.dumps({"visual.proj": [1.0]}))
    damaged = tmp_path / "model.safetensors"
    damaged.write_bytes(b"\xff" * 100)
    for path, reason in [(pickled, "a pickle file"), (damaged, "not a valid safetensors file")]:
        message = error_of([f"model.pretrained={path}"], data_check=True)
        assert message.startswith("`model.pretrained` must be a weights file")
        assert reason in message
        assert "weights_only=False" not in message
    assert "must be an existing weights file" in error_of(
        [f"model.pretrained={tmp_path / 'missing.safetensors'}"], data_check=True
    )


def test_an_open_clip_tag_is_not_taken_for_a_file():
    from trainables.backbone import pretrained_file

    assert pretrained_file("ViT-B-32", "openai") is None
    assert pretrained_file("ViT-B-32", "w.safetensors") == Path("w.safetensors")
    assert pretrained_file("embedded", "weights") == Path("weights")
    assert pretrained_file("embedded", None) is None


def test_gradient_checkpointing_is_for_vit_models():
    config = load_config(None, ["model.name=ViT-B-32", "model.grad_checkpointing=true"])
    assert config.model.grad_checkpointing is True
    with pytest.raises(UserInputError, match="`model.grad_checkpointing` must be false for the"):
        load_config(None, ["model.grad_checkpointing=true"])
