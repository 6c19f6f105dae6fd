"""The mini-replication: fine-tune every method from one base CLIP with one budget, attack all
of them the same way, in-distribution and zero-shot, and test the paper's claims on the numbers.

Every method starts from a copy of the same base weights, trains for the same number of steps
with the same batch, optimiser, training-attack radius and steps (an *equal-budget* protocol:
FARE's embedding attack gets the same steps as everyone, not its native 10), and seed. Each is
evaluated on the **test** split of the fine-tuning dataset (per-level robustness profile) and of
every dataset of a zero-shot suite; nothing here selects on test. The first seed also runs the
attack-strength checks (AutoAttack on the leaf and superclass levels, PGD over eps and steps,
the gradient-free Square attack). Summaries are means over seeds with 95% confidence intervals
(Student t), and :func:`~trainables.compare_claims.claims` states which of the paper's claims
hold, with the numbers.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import torch

from trainables.compare_claims import claims, summarise, table_columns
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
