"""What a zero-shot suite is, and how one is written in YAML (:func:`load_suite`).

A suite lists its datasets (each with its prompt templates, its trees or none, and a per-dataset
sample cap) and the attack radii it is scored at; :mod:`trainables.suites` holds the shipped
suites and evaluates them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from trainables.data.benchmark_prompts import (
    TECOA_TEMPLATES,
    benchmark_templates,
    has_benchmark_templates,
)
from trainables.errors import must
from trainables.numbers import is_finite_number, is_integer
from trainables.readers import read_yaml


@dataclass(frozen=True)
class SuiteDataset:
    """One dataset of a suite.

    Attributes:
        dataset: a name of the dataset registry.
        templates: the prompt templates its classes are ensembled over.
        trees: a shipped tree or forest over its classes (per-level profile), or None for a flat
            class list.
        samples: images evaluated per split (the first ones; a cap, as FARE's protocol uses).
        root: where the dataset's files are (None: the evaluation's ``data_root``).
        name: what reports call it (default: ``dataset``; two image folders need two names).
    """

    dataset: str
    templates: tuple[str, ...] = ("a photo of a {}.",)
    trees: str | None = None
    samples: int = 500
    root: str | None = None
    name: str | None = None

    @property
    def key(self) -> str:
        """The dataset's name in reports and metrics."""
        return self.name or self.dataset


@dataclass(frozen=True)
class Suite:
    """A named list of zero-shot datasets and the PGD radii its robust numbers use.

    ``eps`` are the radii of the robust-accuracy curve; ``headline_eps`` (one of them) is the one
    reported as ``robust`` and averaged into ``zeroshot_robust``.
    """

    name: str
    datasets: tuple[SuiteDataset, ...]
    eps: tuple[float, ...]
    headline_eps: float
    steps: int = 10
    description: str = ""
    excludes: tuple[str, ...] = field(default=())  # fine-tuning datasets it must not overlap

    def __post_init__(self):
        if not self.datasets:
            raise must("datasets", "at least one dataset", "<none>")
        if self.headline_eps not in self.eps:
            raise must(
                "headline_eps", f"one of the suite's eps {list(self.eps)}", self.headline_eps
            )


#: Named template sets a suite file may give instead of a list: the TeCoA line's single
#: template, or clip_benchmark's templates of each dataset (the FARE line).
TEMPLATE_SETS = ("tecoa", "clip_benchmark")

#: Suffixes of a suite file.
SUITE_SUFFIXES = (".yaml", ".yml")
_SUITE_KEYS = ("name", "description", "eps", "headline_eps", "steps", "templates", "datasets")
_DATASET_KEYS = ("dataset", "name", "root", "templates", "trees", "samples")


def load_suite(path: str | Path) -> Suite:
    """A suite written in YAML: the datasets a user has on disk, with their roots.

    ``datasets`` lists ``{dataset, name, root, templates, trees, samples}`` (only ``dataset`` is
    required; ``root`` defaults to the job's ``data.root``; ``name``, what reports call it, to
    the dataset's name, or an image folder's folder name); ``eps`` are the PGD radii (default
    1/255, 2/255, 4/255), ``headline_eps`` the one reported as ``robust`` (default the middle
    one), ``steps`` the PGD steps (default 10); ``name`` defaults to the file's stem.
    """
    from trainables.data.class_lists import DATASETS

    path = Path(path)
    where = f"suite {path}"
    spec = read_yaml(path)
    if not isinstance(spec, dict):
        raise must(where, "a mapping with `datasets`", type(spec).__name__)
    unknown = sorted(set(spec) - set(_SUITE_KEYS))
    if unknown:
        raise must(f"{where}: {unknown[0]}", f"one of the keys {list(_SUITE_KEYS)}", unknown[0])
    default_templates = spec.get("templates", ["a photo of a {}."])
    entries = spec.get("datasets")
    if not isinstance(entries, list) or not entries:
        raise must(f"{where}: datasets", "a non-empty list", entries)
    datasets = []
    for number, entry in enumerate(entries):
        field = f"{where}: datasets[{number}]"
        entry = {"dataset": entry} if isinstance(entry, str) else entry
        if not isinstance(entry, dict) or entry.get("dataset") not in DATASETS:
            raise must(f"{field}.dataset", f"one of {list(DATASETS)}", entry)
        unknown = sorted(set(entry) - set(_DATASET_KEYS))
        if unknown:
            raise must(f"{field}", f"made of the keys {list(_DATASET_KEYS)}", unknown[0])
        templates = resolve_templates(
            entry.get("templates", default_templates), entry["dataset"], f"{field}.templates"
        )
        samples = entry.get("samples", 500)
        if not is_integer(samples) or samples < 1:
            raise must(f"{field}.samples", "an integer >= 1", samples)
        root = None if entry.get("root") is None else str(entry["root"])
        name = entry.get("name")
        if name is None and entry["dataset"] == "imagefolder" and root is not None:
            name = Path(root).name
        if name is not None and not isinstance(name, str):
            raise must(f"{field}.name", "a text", name)
        dataset = SuiteDataset(entry["dataset"], templates, entry.get("trees"), samples, root, name)
        if dataset.key in {other.key for other in datasets}:
            raise must(f"{field}.name", "a name no other dataset of the suite has", dataset.key)
        datasets.append(dataset)
    eps = spec.get("eps", [1 / 255, 2 / 255, 4 / 255])
    if (
        not isinstance(eps, list)
        or not eps
        or not all(is_finite_number(radius) and 0 < radius <= 1 for radius in eps)
    ):
        raise must(f"{where}: eps", "a list of radii in (0, 1]", eps)
    headline = spec.get("headline_eps", eps[len(eps) // 2])
    if headline not in eps:
        raise must(f"{where}: headline_eps", f"one of eps {eps}", headline)
    steps = spec.get("steps", 10)
    if not is_integer(steps) or steps < 1:
        raise must(f"{where}: steps", "an integer >= 1", steps)
    return Suite(
        name=str(spec.get("name", path.stem)),
        datasets=tuple(datasets),
        eps=tuple(float(radius) for radius in eps),
        headline_eps=float(headline),
        steps=steps,
        description=str(spec.get("description", "")),
    )


def resolve_templates(value, dataset: str, field: str) -> tuple[str, ...]:
    """A dataset's templates: a list of texts with a ``{}``, or a name of :data:`TEMPLATE_SETS`."""
    if value == "tecoa":
        return TECOA_TEMPLATES
    if value == "clip_benchmark":
        if not has_benchmark_templates(dataset):
            raise must(
                field, f"a list of texts (clip_benchmark has no templates for {dataset})", value
            )
        return benchmark_templates(dataset)
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(text, str) and "{}" in text for text in value)
    ):
        raise must(
            field, f"one of {list(TEMPLATE_SETS)} or a list of texts with a {{}} placeholder", value
        )
    return tuple(value)
