"""The mini-replication: fine-tune every method from one base CLIP with one budget, attack all
of them the same way, in-distribution and zero-shot, and test the paper's claims on the numbers.

Every method starts from a copy of the same base weights, trains for the same number of steps
with the same batch, optimiser, training-attack radius and steps (an *equal-budget* protocol:
FARE's embedding attack gets the same steps as everyone, not its native 10), and seed. Each is
evaluated on the **test** split of the fine-tuning dataset (per-level robustness profile) and of
every dataset of a zero-shot suite; nothing here selects on test. The first seed also runs the
attack-strength checks (AutoAttack on the leaf and superclass levels, PGD over eps and steps,
the gradient-free Square attack). Summaries are means over seeds with 95% confidence intervals
(Student t), and :func:`claims` states which of the paper's claims hold, with the numbers.
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
from trainables.evaluate import (
    AttackSettings,
    attack_strength,
    robustness_profile,
)
from trainables.margins import MarginSchedule
from trainables.methods import METHOD_NAMES, TrainingAttack, build_method, method_settings
from trainables.training import OptimSettings, check_seed, fit

log = logging.getLogger(__name__)

#: Rows that are a method with some settings changed: explicit margins (this project's
#: searchable addition, not the paper's method) and the two other attack strategies.
VARIANTS: dict[str, tuple[str, dict]] = {
    "hrz-forest+margins": (
        "hrz-forest",
        {"margins": MarginSchedule(shape="theorem", base=1.0, kappa=0.05)},
    ),
    "hrz-forest/leaf-attack": ("hrz-forest", {"strategy": "leaf"}),
    "hrz-forest/per-level-attack": ("hrz-forest", {"strategy": "per_level"}),
}
ENTRIES: tuple[str, ...] = (*METHOD_NAMES, *VARIANTS)
#: Each method's peak learning rate, chosen on the **validation** split by
#: ``bench/compare_lr.py`` (lr 1e-4, 2e-4, 5e-4; seeds 0 and 1; the rule: highest mean of the
#: suite's zero-shot clean and robust accuracy). A variant row trains at its method's rate. One
#: rate for all (``--lr``) is the other protocol; at 5e-4 the hyperbolic head's image norms drift
#: so far that the method loses a third of its zero-shot clean accuracy (README).
LEARNING_RATES: dict[str, float] = {
    "tecoa": 2e-4,
    "pmg": 5e-4,
    "fare": 5e-4,
    "hrz": 1e-4,
    "hrz-forest": 1e-4,
}


def base_method(name: str) -> str:
    """The method a row trains: itself, or the method a variant changes."""
    return VARIANTS.get(name, (name, {}))[0]


def entry_settings(name: str):
    """The :class:`~trainables.methods.MethodSettings` of a method or a variant row."""
    if name not in ENTRIES:
        raise must("methods", f"names from {list(ENTRIES)}", name)
    method, changes = VARIANTS.get(name, (name, {}))
    settings = method_settings(method)
    if "margins" in changes:
        settings = replace(settings, loss=replace(settings.loss, margins=changes["margins"]))
    if "strategy" in changes:
        settings = replace(settings, attack=replace(settings.attack, strategy=changes["strategy"]))
    return settings


@dataclass(frozen=True)
class CompareSettings:
    """The shared budget and protocol of a comparison.

    Attributes:
        methods: methods and variant rows (:data:`ENTRIES`), in table order.
        seeds: one fine-tuning per method and seed; summaries give a 95% interval over them.
        optim: optimiser, steps and batch shared by every method.
        learning_rates: peak learning rate per method (validation-selected
            :data:`LEARNING_RATES`); None: every method trains at ``optim.lr``.
        eps, attack_steps: the training attack's L-inf radius and steps, shared by every method
            (each keeps its own objective: leaf CE, embedding distance, or the hierarchy).
        evaluation: the evaluation PGD (the same for every method and level).
        eval_samples: test images of the fine-tuning dataset attacked per method and seed.
        train_size: training images used (None: the whole training split).
        suite: the zero-shot suite (None: in-distribution only); ``suite_samples`` images per
            dataset.
        check_samples: images of the attack-strength checks (first seed only; 0: skip them).
        autoattack_steps: iterations of each AutoAttack attack in the checks.
        square_queries: queries of the gradient-free Square attack in the checks.
    """

    methods: tuple[str, ...] = ENTRIES
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    optim: OptimSettings = field(
        default_factory=lambda: OptimSettings(epochs=1.0, batch_size=128, lr=5e-4)
    )
    learning_rates: dict[str, float] | None = field(default_factory=lambda: dict(LEARNING_RATES))
    eps: float = 4 / 255
    attack_steps: int = 2
    evaluation: AttackSettings = field(
        default_factory=lambda: AttackSettings(eps=4 / 255, steps=10)
    )
    eval_samples: int = 300
    train_size: int | None = 4096
    suite: str | None = "embedded-zeroshot"
    suite_samples: int = 150
    check_samples: int = 100
    autoattack_steps: int = 20
    square_queries: int = 300

    def __post_init__(self):
        if not self.methods:
            raise must("methods", "a non-empty list of methods", list(self.methods))
        for name in self.methods:
            if name not in ENTRIES:
                raise must("methods", f"names from {list(ENTRIES)}", name)
        if len(set(self.methods)) != len(self.methods):
            raise must("methods", "distinct names", list(self.methods))
        if not self.seeds:
            raise must("seeds", "at least one seed", list(self.seeds))
        if len(set(self.seeds)) != len(self.seeds):
            raise must("seeds", "distinct seeds", list(self.seeds))
        for seed in self.seeds:
            check_seed(seed, "seeds")
        if self.eval_samples < 1:
            raise must("eval_samples", ">= 1", self.eval_samples)
        if self.train_size is not None and self.train_size < self.optim.batch_size:
            raise must("train_size", f">= the batch size {self.optim.batch_size}", self.train_size)
        if self.suite is not None:
            from trainables.suites import get_suite

            get_suite(self.suite)
        for name in ("suite_samples", "autoattack_steps", "square_queries"):
            if getattr(self, name) < 1:
                raise must(name, ">= 1", getattr(self, name))
        if self.check_samples < 0:
            raise must("check_samples", ">= 0", self.check_samples)
        for name, lr in (self.learning_rates or {}).items():
            if name not in METHOD_NAMES or not lr > 0:
                expected = f"{{method: lr > 0}} with methods from {list(METHOD_NAMES)}"
                raise must("learning_rates", expected, {name: lr})

    def lr_of(self, name: str) -> float:
        """The peak learning rate row ``name`` trains at."""
        return (self.learning_rates or {}).get(base_method(name), self.optim.lr)


def fine_tune(name: str, seed: int, settings: CompareSettings, base, forest, train_split, optim):
    """Row ``name`` fine-tuned from a copy of ``base`` with the comparison's training attack;
    returns the method and :func:`~trainables.training.fit`'s result."""
    torch.manual_seed(seed)
    loaded = replace(base, model=copy.deepcopy(base.model))
    method_config = entry_settings(name)
    attack = replace(method_config.attack, eps=settings.eps, steps=settings.attack_steps)
    method_config = replace(method_config, attack=TrainingAttack(**asdict(attack)))
    calibration = train_split.subset(256).float_images()
    method = build_method(method_config, loaded, forest, calibration_images=calibration, seed=seed)
    return method, fit(method, train_split, optim)


def run_one(
    name: str,
    seed: int,
    settings: CompareSettings,
    base,
    forest,
    train_split,
    test_split,
    *,
    checks: bool = False,
) -> dict:
    """Fine-tune ``name`` from a copy of ``base``; its test-split numbers, costs and checks."""
    optim = replace(settings.optim, seed=seed, lr=settings.lr_of(name))
    method, trained = fine_tune(name, seed, settings, base, forest, train_split, optim)
    evaluator = method.classifier.with_forest(forest).eval()
    started = time.perf_counter()
    test = test_split.subset(settings.eval_samples)
    evaluation = replace(settings.evaluation, seed=seed)
    row = {
        "method": name,
        "seed": seed,
        "lr": optim.lr,
        "profile": robustness_profile(evaluator, test.images, test.labels, evaluation),
        "train": {
            "steps": trained.steps,
            "seconds": round(trained.seconds, 2),
            "images_per_second": round(trained.images_per_second, 1),
            "last_epoch": trained.history[-1] if trained.history else {},
        },
    }
    if settings.suite is not None:
        from trainables.suites import evaluate_suite

        row["zeroshot"] = evaluate_suite(
            evaluator,
            settings.suite,
            split="test",
            samples=settings.suite_samples,
            eps=(evaluation.eps,),
            steps=evaluation.steps,
            seed=seed,
        )
    if checks and settings.check_samples:
        row["checks"] = _checks(evaluator, test.subset(settings.check_samples), settings, seed)
    row["eval_seconds"] = round(time.perf_counter() - started, 2)
    return row


def _checks(evaluator, data, settings: CompareSettings, seed: int) -> dict:
    """AutoAttack on the leaf and every superclass level, and the attack-strength checks, on
    the fine-tuning dataset's test images; AutoAttack on each zero-shot dataset's leaves."""
    eps = settings.evaluation.eps
    from trainables.suites import autoattack_levels

    autoattack = autoattack_levels(
        evaluator, data.images, data.labels, eps, settings.autoattack_steps, seed
    )
    strength = attack_strength(
        evaluator,
        data.images,
        data.labels,
        eps=eps,
        eps_grid=(eps / 2, eps, eps * 2),
        steps_grid=(5, 10, 20),
        square_queries=settings.square_queries,
        seed=seed,
    )
    out = {"samples": len(data), "autoattack": autoattack, "strength": strength}
    if settings.suite is not None:
        from trainables.suites import evaluate_suite

        zero_shot = evaluate_suite(
            evaluator,
            settings.suite,
            split="test",
            samples=settings.check_samples,
            eps=(eps,),
            steps=settings.evaluation.steps,
            profile=False,
            autoattack=True,
            autoattack_steps=settings.autoattack_steps,
            seed=seed,
        )
        out["zeroshot_autoattack"] = {
            "datasets": {n: d["autoattack"] for n, d in zero_shot["datasets"].items()},
            "average": zero_shot["average"]["autoattack"],
            "pgd_average": zero_shot["average"]["robust"],
        }
    return out


def table_columns(row: dict) -> dict[str, float]:
    """Flatten one row into the comparison table's columns (all test split)."""
    profile = row["profile"] if "profile" in row else row
    columns = {"clean leaf": profile["clean_leaf"], "robust leaf": profile["robust_leaf"]}
    for tree, levels in profile["superclass_attacks"].items():
        for level, cell in levels.items():
            columns[f"{tree}/{level} level"] = cell["level"]
            columns[f"{tree}/{level} leaf"] = cell["leaf"]
    columns["transfer"] = profile["transfer"]
    zero_shot = row.get("zeroshot") if "profile" in row else None
    if zero_shot is not None:
        columns["zeroshot clean"] = zero_shot["average"]["clean"]
        columns["zeroshot robust"] = zero_shot["average"]["robust"]
        for name, result in zero_shot["datasets"].items():
            columns[f"{name} clean"] = result["clean"]
            columns[f"{name} robust"] = result["robust"]
    if "train" in row:
        columns["train seconds"] = row["train"]["seconds"]
    return columns


def t_quantile(confidence: float, dof: int) -> float:
    """Two-sided Student-t quantile, e.g. 2.776 for 95% and 4 degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(0.5 + confidence / 2, dof))


def interval(values: list[float], confidence: float = 0.95) -> dict[str, float]:
    """Mean, sample standard deviation and the ``confidence`` interval's half-width (Student t).

    With one value the half-width is NaN: one seed says nothing about the spread.
    """
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return {"mean": mean, "std": float("nan"), "ci95": float("nan"), "n": n}
    std = math.sqrt(sum((value - mean) ** 2 for value in values) / (n - 1))
    return {
        "mean": mean,
        "std": std,
        "ci95": t_quantile(confidence, n - 1) * std / math.sqrt(n),
        "n": n,
    }


def summarise(rows: list[dict]) -> dict[str, dict[str, dict[str, float]]]:
    """Per method and column: mean, sample std and 95% interval half-width over seeds."""
    by_method: dict[str, list[dict[str, float]]] = {}
    for row in rows:
        by_method.setdefault(row["method"], []).append(table_columns(row))
    return {
        method: {key: interval([c[key] for c in columns]) for key in columns[0]}
        for method, columns in by_method.items()
    }


def paired_difference(rows: list[dict], a: str, b: str, column: str) -> dict[str, float] | None:
    """``a - b`` on ``column``, paired by seed (same data order and attack starts), with its
    95% interval; None when either method is missing."""
    values = {}
    for row in rows:
        values.setdefault(row["method"], {})[row["seed"]] = table_columns(row).get(column)
    if a not in values or b not in values:
        return None
    seeds = sorted(set(values[a]) & set(values[b]))
    if not seeds or any(values[m][s] is None for m in (a, b) for s in seeds):
        return None
    return interval([values[a][s] - values[b][s] for s in seeds])


def _verdict(difference: dict | None, *, want: str) -> str:
    """ "holds" / "contradicted" / "not resolved" for a claimed sign of a paired difference.

    ``want`` is ``"positive"`` (a > b), ``"negative"`` (a < b) or ``"not negative"`` (a >= b,
    "at least as good": holds unless the interval lies wholly below zero).
    """
    if difference is None:
        return "not measured"
    low = difference["mean"] - difference["ci95"]
    high = difference["mean"] + difference["ci95"]
    if math.isnan(low):  # one seed: the sign of the mean only
        low = high = difference["mean"]
    if want == "not negative":
        return "contradicted" if high < 0 else "holds"
    if want == "negative":
        low, high = -high, -low
    if low > 0:
        return "holds"
    if high < 0:
        return "contradicted"
    return "not resolved (the 95% interval includes 0)"


def claims(rows: list[dict], summary: dict) -> list[dict]:
    """The paper's claims (a)-(e), each with its verdict and the numbers it rests on."""

    def stat(method: str, column: str):
        return summary.get(method, {}).get(column)

    def diff(a, b, column, want):
        d = paired_difference(rows, a, b, column)
        return {
            "a": a,
            "b": b,
            "column": column,
            "difference": d,
            "verdict": _verdict(d, want=want),
        }

    out = []
    clip_clean, clip_robust = stat("clip", "zeroshot clean"), stat("clip", "zeroshot robust")
    if clip_clean and clip_robust:
        ratio = clip_robust["mean"] / max(clip_clean["mean"], 1e-9)
        out.append(
            {
                "claim": "(a) CLIP collapses under attack on the zero-shot suite",
                "test": "CLIP's zero-shot robust accuracy below half its clean accuracy",
                "numbers": {"clean": clip_clean, "robust": clip_robust, "ratio": ratio},
                "verdict": "holds" if ratio < 0.5 else "contradicted",
            }
        )
    out.append(
        {
            "claim": "(b) TeCoA loses zero-shot clean accuracy relative to CLIP",
            "comparisons": [diff("tecoa", "clip", "zeroshot clean", "negative")],
        }
    )
    out.append(
        {
            "claim": "(c) the method loses less zero-shot clean accuracy and is more robust on "
            "the suite than TeCoA",
            "comparisons": [
                diff("hrz-forest", "tecoa", "zeroshot clean", "positive"),
                diff("hrz-forest", "tecoa", "zeroshot robust", "positive"),
                diff("hrz", "tecoa", "zeroshot clean", "positive"),
                diff("hrz", "tecoa", "zeroshot robust", "positive"),
            ],
        }
    )
    out.append(
        {
            "claim": "(d) the forest is at least as good as one tree",
            "comparisons": [
                diff("hrz-forest", "hrz", column, "not negative")
                for column in ("clean leaf", "robust leaf", "zeroshot clean", "zeroshot robust")
            ],
        }
    )
    strategies = {
        "universal": "hrz-forest",
        "leaf": "hrz-forest/leaf-attack",
        "per_level": "hrz-forest/per-level-attack",
    }
    cost = {
        key: {
            "robust leaf": stat(name, "robust leaf"),
            "zeroshot robust": stat(name, "zeroshot robust"),
            "train seconds": stat(name, "train seconds"),
        }
        for key, name in strategies.items()
        if name in summary
    }
    comparisons = [
        diff(strategies["universal"], strategies[other], column, "not negative")
        for other in ("leaf", "per_level")
        for column in ("robust leaf", "zeroshot robust")
    ]
    comparisons.append(
        diff(strategies["universal"], strategies["per_level"], "train seconds", "negative")
    )
    out.append(
        {
            "claim": "(e) the universal perturbation gives the best robustness per training cost "
            "among the three strategies",
            "numbers": cost,
            "comparisons": comparisons,
        }
    )
    for claim in out:
        if "verdict" not in claim:
            verdicts = [c["verdict"] for c in claim["comparisons"]]
            if any(v == "not measured" for v in verdicts):
                claim["verdict"] = "not measured (a method is missing)"
            elif all(v == "holds" for v in verdicts):
                claim["verdict"] = "holds"
            elif any(v == "contradicted" for v in verdicts):
                claim["verdict"] = "contradicted"
            else:
                claim["verdict"] = "not resolved"
    return out


def run_compare(
    settings: CompareSettings,
    *,
    base,
    forest,
    dataset,
    on_result: Callable[[dict], None] | None = None,
) -> dict:
    """Run every method for every seed; returns settings, raw rows, summary and claims."""
    train_split, test_split = dataset.split("train"), dataset.split("test")
    if settings.train_size is not None:
        train_split = train_split.subset(settings.train_size)
    if settings.suite is not None:
        from trainables.suites import check_disjoint, get_suite

        check_disjoint(get_suite(settings.suite), forest)
    started = time.perf_counter()
    rows = []
    for seed in settings.seeds:
        for name in settings.methods:
            row = run_one(
                name,
                seed,
                settings,
                base,
                forest,
                train_split,
                test_split,
                checks=seed == settings.seeds[0],
            )
            log.info("%s seed %d: %s", name, seed, table_columns(row))
            rows.append(row)
            if on_result is not None:
                on_result(row)
    summary = summarise(rows)
    return {
        "settings": _describe(settings),
        "rows": rows,
        "summary": summary,
        "claims": claims(rows, summary),
        "seconds": round(time.perf_counter() - started, 1),
    }


def _describe(settings: CompareSettings) -> dict:
    described = asdict(settings)
    described["evaluation"] = settings.evaluation.describe()
    described["split"] = "test (reported; nothing is selected on it)"
    described["protocol"] = (
        "equal budget: every method trains with the same optimiser, steps, batch"
        + (" (its own validation-selected learning rate)" if settings.learning_rates else "")
        + ", and a "
        f"{settings.attack_steps}-step training attack at the same eps (FARE's embedding "
        "attack included; its native setting is 10 steps)"
    )
    return described
