"""Reading an experiment config: strict YAML files and ``key=value`` overrides, into the raw
nested mapping that :func:`raysearch.config.building.config_from_dict` checks and builds."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from raysearch.config.writing import plain
from trainables.errors import must
from trainables.readers import (
    RepeatedKey,
    YamlRefused,
    expanded,
    is_file,
    load_yaml,
    read_text,
    yaml_reason,
)

_OVERRIDE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")


def parse_yaml(text: str, where: str, field: str = "config"):
    """Parse strict YAML; a document past the bounds of :func:`trainables.readers.load_yaml`
    (an alias bomb, deep nesting, a list as a key) is refused before it is built.

    ``where`` names the source (a file, an override) and ``field`` the setting in the error;
    text that is not YAML raises ``yaml.YAMLError`` for the caller to phrase.
    """
    try:
        return load_yaml(text)
    except YamlRefused as refused:
        raise must(field, f"YAML {refused.constraint}", f"<{where}: {refused.detail}>") from None
    except RepeatedKey as repeated:
        raise must(
            field,
            "YAML with each key once per section",
            f"<`{repeated.key}` repeated at line {repeated.line} of {where}>",
        ) from None


def looks_like_override(text: str) -> bool:
    """Whether ``text`` reads as ``key=value`` (a dotted key), e.g. ``data.trees=embedded/form``."""
    key, sep, _ = text.partition("=")
    return bool(sep) and _OVERRIDE_KEY.fullmatch(key.strip()) is not None


def parse_override(text: str) -> tuple[str, Any]:
    """``"optim.lr=1e-3"`` -> ``("optim.lr", 0.001)``: a dotted key and a YAML value."""
    if not looks_like_override(text):
        raise must("override", "of the form key=value", text)
    key, _, raw = text.partition("=")
    key = key.strip()
    try:
        return key, parse_yaml(raw, f"override {key}", key)
    except yaml.YAMLError:
        raise must(key, "a YAML value", raw) from None


def apply_overrides(data: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the nested mapping ``data`` with ``{dotted key: value}`` set, in order."""
    result = plain(data)
    for dotted, value in values.items():
        parts = dotted.split(".")
        node = result
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                section = ".".join(parts[: depth + 1])
                raise must(section, f"a section to set `{dotted}` in", child)
            node = child
        node[parts[-1]] = plain(value)
    return result


def read_config_dict(path: str | Path | None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The raw nested mapping of a YAML file (None: empty) with ``key=value`` overrides applied.

    Nothing is checked but the syntax; :func:`config_from_dict` turns it into a config. Keeping
    the raw mapping lets later values (a trial's parameters) be applied with the method defaults
    still following ``method.name``.
    """
    data: Any = {}
    if path is not None:
        file = expanded(path)
        if not is_file(file):
            raise must("config", "an existing YAML file", str(path))
        text = read_text(file)
        try:
            data = parse_yaml(text, str(path))
        except yaml.YAMLError as error:
            raise must("config", "valid YAML", f"<{path}: {yaml_reason(error)}>") from None
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise must("config", "a mapping of sections such as method, optim and data", data)
    for text in overrides:
        key, value = parse_override(text)
        data = apply_overrides(data, {key: value})
    return plain(data)
