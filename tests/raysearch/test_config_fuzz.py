"""Property tests of configs, overrides and search spaces over generated YAML.

Whatever the text, loading gives a checked object or one
:class:`~trainables.errors.UserInputError` line, within the deadline, and writes no file.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raysearch.config import ExperimentConfig, load_config, validate_with_data
from raysearch.spaces import SearchSpace, load_space
from tests.fuzz_text import deep_nesting, fuzz_settings, yaml_documents, yaml_values
from trainables.errors import UserInputError

FUZZ = fuzz_settings(120)

#: Dotted settings that exist, so that generated overrides reach the checks of each section.
SETTINGS = (
    "name", "seed", "method.name", "method.trees", "method.depths", "method.templates",
    "head.temperature", "loss.margins.shape", "loss.margins.kappa", "attack.eps",
    "attack.steps", "optim.lr", "optim.epochs", "optim.batch_size", "evaluation.eps",
    "data.dataset", "data.trees", "data.train_size", "model.name", "model.pretrained",
    "scaling.workers", "checkpoint.keep", "mlflow.experiment", "optim", "data",
)  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def _imported():
    """The first load imports the science (torch with it); that is not the loaders' time."""
    validate_with_data(load_config(None))


@pytest.fixture()
def folder(tmp_path, monkeypatch) -> Path:
    """The working folder: anything written relative to it would show up here."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _contract(read, folder: Path, path: Path | None = None):
    """``read()`` returns a value or raises one UserInputError line; it writes no file."""
    before = set(folder.rglob("*"))
    try:
        return read()
    except UserInputError as error:
        message = str(error)
        assert message and "\n" not in message and "\r" not in message, message
        assert "PosixPath(" not in message, message
        return None
    finally:
        assert set(folder.rglob("*")) == before


def _config(path: Path | None, overrides=()) -> ExperimentConfig:
    config = load_config(path, overrides)
    validate_with_data(config)
    return config


@FUZZ
@given(text=yaml_documents())
def test_config_files_meet_the_contract(folder, text):
    path = folder / "experiment.yaml"
    path.write_text(text, encoding="utf-8", newline="")
    result = _contract(lambda: _config(path), folder)
    assert result is None or isinstance(result, ExperimentConfig)


@FUZZ
@given(
    key=st.sampled_from(SETTINGS)
    | st.from_regex(r"[a-z_]{1,6}(\.[a-z_]{1,6}){0,3}", fullmatch=True),
    value=yaml_values() | deep_nesting(),
)
def test_overrides_meet_the_contract(folder, key, value):
    result = _contract(lambda: _config(None, [f"{key}={value}"]), folder)
    assert result is None or isinstance(result, ExperimentConfig)


def _space_documents() -> st.SearchStrategy[str]:
    """A search space's sections, each either a valid value or a generated one."""

    def section(valid: str) -> st.SearchStrategy[str]:
        return st.just(valid) | yaml_values()

    parts = st.tuples(
        section("t"),
        section("null") | st.just("{optim: {epochs: 2}}") | st.just("missing.yaml"),
        section("[optim.lr=0.001]") | deep_nesting().map(lambda value: f"['optim.lr={value}']"),
        section("{metric: robust_leaf, mode: max}"),
        section("{trials: 2, scheduler: none}"),
        section("{optim.lr: {type: float, low: 0.0001, high: 0.001}}")
        | st.tuples(st.sampled_from(SETTINGS), yaml_values()).map(
            lambda kv: f"{{{kv[0]}: {kv[1]}}}"
        ),
    )
    keys = ("name", "base", "overrides", "objective", "budget", "space")
    filled = parts.map(
        lambda values: "".join(f"{k}: {v}\n" for k, v in zip(keys, values, strict=True))
    )
    return filled | yaml_documents()


@FUZZ
@given(text=_space_documents())
def test_search_spaces_meet_the_contract(folder, text):
    path = folder / "space.yaml"
    path.write_text(text, encoding="utf-8", newline="")
    result = _contract(lambda: load_space(path), folder)
    assert result is None or isinstance(result, SearchSpace)
