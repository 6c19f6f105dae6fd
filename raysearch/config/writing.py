"""The experiment config written out: as its nested mapping, YAML, MLflow params, a job name."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from raysearch.config.schema import HIDDEN, HOISTED, ExperimentConfig
from trainables.cache import content_key


def join_key(path: str, key: Any) -> str:
    """A dotted setting name: ``join_key("optim", "lr") == "optim.lr"``."""
    return f"{path}.{key}" if path else str(key)


def plain(value: Any, skip: Iterable[str] = ()) -> Any:
    """Nested dicts, lists and scalars (YAML- and JSON-safe)."""
    if is_dataclass(value) and not isinstance(value, type):
        return {
            item.name: plain(getattr(value, item.name))
            for item in fields(value)
            if item.init and item.name not in skip
        }
    if isinstance(value, Mapping):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    return value


def config_to_dict(config: ExperimentConfig) -> dict[str, Any]:
    """The nested mapping of ``config`` in the YAML layout; ``config_from_dict`` inverts it."""
    result: dict[str, Any] = {"name": config.name, "seed": config.seed}
    result["method"] = plain(config.method, skip=HOISTED)
    for key in HOISTED:
        result[key] = plain(getattr(config.method, key))
    for key in ("optim", "evaluation", "data", "model", "scaling", "checkpoint", "mlflow"):
        result[key] = plain(getattr(config, key), skip=HIDDEN.get(key, {}))
    return result


def dump_config(config: ExperimentConfig) -> str:
    """``config`` as YAML text that :func:`load_config` reads back to an equal config."""
    return yaml.safe_dump(config_to_dict(config), sort_keys=False)


def flatten(config: ExperimentConfig) -> dict[str, str | int | float | bool | None]:
    """``{"optim.lr": 0.0005, "method.trees": "[form, corners]", ...}`` (MLflow params).

    Lists are written in YAML flow style, so every entry is also a valid override.
    """
    flat: dict[str, str | int | float | bool | None] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(join_key(prefix, key), item)
        elif isinstance(value, list):
            flat[prefix] = yaml.safe_dump(value, default_flow_style=True, width=1 << 16).strip()
        else:
            flat[prefix] = value

    walk("", config_to_dict(config))
    return flat


def job_name(config: ExperimentConfig) -> str:
    """The given name, else ``"<method>-<8 hex digits of the content>"`` (stable)."""
    if config.name is not None:
        return config.name
    content = config_to_dict(config)
    del content["name"]
    return f"{config.method.name}-{content_key(content, length=8)}"
