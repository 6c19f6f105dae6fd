"""clip_benchmark's class names and zero-shot prompt templates for the suite's datasets.

They are read from ``benchmark_prompts.json`` (shipped with the package; its ``source`` and
``license`` fields say where it comes from): the cleaned class names clip_benchmark gives the
datasets whose own names are codes or numbers (Flowers-102's labels, EuroSAT's ``AnnualCrop``,
Caltech-101's ``Faces_easy``), and the templates of the FARE evaluation line.
"""

from __future__ import annotations

import functools
from pathlib import Path

from trainables.errors import must

#: The single template of the TeCoA evaluation line (TeCoA, PMG-AFT, TGA-ZSR).
TECOA_TEMPLATES: tuple[str, ...] = ("This is a photo of a {}",)


@functools.lru_cache(maxsize=1)
def _prompts() -> dict:
    from trainables.readers import read_json

    return read_json(Path(__file__).with_name("benchmark_prompts.json"))


def benchmark_classnames(name: str) -> tuple[str, ...] | None:
    """clip_benchmark's class names of dataset ``name`` in label order, or None where it uses
    the dataset's own names."""
    names = _prompts()["classnames"].get(name)
    return None if names is None else tuple(names)


def benchmark_templates(name: str) -> tuple[str, ...]:
    """clip_benchmark's prompt templates of dataset ``name`` (``{}`` marks the class name)."""
    templates = _prompts()["templates"]
    if name not in templates:
        raise must("dataset", f"one of the datasets with templates: {', '.join(templates)}", name)
    return tuple(templates[name])


def has_benchmark_templates(name: str) -> bool:
    return name in _prompts()["templates"]
