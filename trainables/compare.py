"""The mini-replication: fine-tune every method from one base CLIP with one budget, attack all
of them the same way, and return the robustness profiles side by side.

Every method starts from a copy of the same base weights, trains for the same number of steps
with the same batch, optimiser, training-attack radius and steps, and seed, and is evaluated on
the same held-out images with the same attacks. Returns plain data; the CLI prints the table.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import torch

from trainables.errors import must
from trainables.evaluate import AttackSettings, robustness_profile
from trainables.methods import METHOD_NAMES, TrainingAttack, build_method, method_settings
from trainables.training import OptimSettings, fit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CompareSettings:
    """The shared budget and protocol of a comparison.

    Attributes:
        methods: methods to run, in table order.
        seeds: one fine-tuning per method and seed; the table reports mean and spread.
        optim: optimiser, steps and batch shared by every method.
        eps, attack_steps: the training attack's L-inf radius and steps, shared by every method
            (each keeps its own objective: leaf CE, embedding distance, or the hierarchy).
        evaluation: the evaluation PGD (the same for every method and level).
        eval_samples: held-out test images attacked per method.
        train_size: training images used (None: the whole training split).
    """

    methods: tuple[str, ...] = METHOD_NAMES
    seeds: tuple[int, ...] = (0, 1)
    optim: OptimSettings = field(
        default_factory=lambda: OptimSettings(epochs=2.0, batch_size=128, lr=5e-4)
    )
    eps: float = 4 / 255
    attack_steps: int = 2
    evaluation: AttackSettings = field(
        default_factory=lambda: AttackSettings(eps=4 / 255, steps=10)
    )
    eval_samples: int = 1000
    train_size: int | None = None

    def __post_init__(self):
        if not self.methods:
            raise must("methods", "a non-empty list of methods", list(self.methods))
        for name in self.methods:
            if name not in METHOD_NAMES:
                raise must("methods", f"names from {list(METHOD_NAMES)}", name)
        if len(set(self.methods)) != len(self.methods):
            raise must("methods", "distinct names", list(self.methods))
        if not self.seeds:
            raise must("seeds", "at least one seed", list(self.seeds))
        if self.eval_samples < 1:
            raise must("eval_samples", ">= 1", self.eval_samples)
        if self.train_size is not None and self.train_size < self.optim.batch_size:
            raise must("train_size", f">= the batch size {self.optim.batch_size}", self.train_size)


def run_one(
    name: str,
    seed: int,
    settings: CompareSettings,
    base,
    forest,
    train_split,
    test_split,
) -> dict:
    """Fine-tune method ``name`` from a copy of ``base`` and return its profile and costs."""
    torch.manual_seed(seed)
    loaded = replace(base, model=copy.deepcopy(base.model))
    method_config = method_settings(name)
    attack = replace(method_config.attack, eps=settings.eps, steps=settings.attack_steps)
    method_config = replace(method_config, attack=TrainingAttack(**asdict(attack)))
    calibration = train_split.subset(256).float_images()
    method = build_method(method_config, loaded, forest, calibration_images=calibration, seed=seed)
    optim = replace(settings.optim, seed=seed)
    trained = fit(method, train_split, optim)
    evaluator = method.classifier.with_forest(forest).eval()
    started = time.perf_counter()
    images = test_split.images[: settings.eval_samples]
    labels = test_split.labels[: settings.eval_samples]
    evaluation = replace(settings.evaluation, seed=seed)
    profile = robustness_profile(evaluator, images, labels, evaluation)
    return {
        "method": name,
        "seed": seed,
        "profile": profile,
        "train": {
            "steps": trained.steps,
            "seconds": round(trained.seconds, 2),
            "images_per_second": round(trained.images_per_second, 1),
            "last_epoch": trained.history[-1] if trained.history else {},
        },
        "eval_seconds": round(time.perf_counter() - started, 2),
    }


def table_columns(profile: dict) -> dict[str, float]:
    """Flatten one profile into the comparison table's columns."""
    columns = {"clean leaf": profile["clean_leaf"], "robust leaf": profile["robust_leaf"]}
    for tree, levels in profile["superclass_attacks"].items():
        for level, cell in levels.items():
            columns[f"{tree}/{level} level"] = cell["level"]
            columns[f"{tree}/{level} leaf"] = cell["leaf"]
    columns["transfer"] = profile["transfer"]
    return columns


def summarise(rows: list[dict]) -> dict[str, dict[str, dict[str, float]]]:
    """Per method and column: mean and (population) standard deviation over seeds."""
    by_method: dict[str, list[dict[str, float]]] = {}
    for row in rows:
        by_method.setdefault(row["method"], []).append(table_columns(row["profile"]))
    summary = {}
    for method, columns in by_method.items():
        summary[method] = {}
        for key in columns[0]:
            values = [column[key] for column in columns]
            mean = sum(values) / len(values)
            spread = math.sqrt(sum((value - mean) ** 2 for value in values) / len(values))
            summary[method][key] = {"mean": mean, "std": spread, "n": len(values)}
    return summary


def run_compare(
    settings: CompareSettings,
    *,
    base,
    forest,
    dataset,
    on_result: Callable[[dict], None] | None = None,
) -> dict:
    """Run every method for every seed; returns settings, raw rows and the summary."""
    train_split, test_split = dataset.split("train"), dataset.split("test")
    if settings.train_size is not None:
        train_split = train_split.subset(settings.train_size)
    started = time.perf_counter()
    rows = []
    for seed in settings.seeds:
        for name in settings.methods:
            row = run_one(name, seed, settings, base, forest, train_split, test_split)
            log.info("%s seed %d: %s", name, seed, table_columns(row["profile"]))
            rows.append(row)
            if on_result is not None:
                on_result(row)
    return {
        "settings": _describe(settings),
        "rows": rows,
        "summary": summarise(rows),
        "seconds": round(time.perf_counter() - started, 1),
    }


def _describe(settings: CompareSettings) -> dict:
    described = asdict(settings)
    described["evaluation"] = settings.evaluation.describe()
    return described
