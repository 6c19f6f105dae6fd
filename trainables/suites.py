"""Zero-shot suites: named lists of datasets that fine-tuning never sees, and their evaluation.

A suite plays the role of the paper's 15 zero-shot datasets: fine-tune on one dataset, then
classify the classes of others with their own prompts, clean and under attack. What a suite is
and its YAML files: :mod:`trainables.suite_files`; the shipped ones are :data:`SUITES`. Adding a
dataset is one :class:`SuiteDataset` entry; the dataset itself comes from the dataset registry
(:func:`trainables.data.registry.load_split`).

:func:`evaluate_suite` is the one evaluator that ``raysearch evaluate --suite``, training jobs,
``raysearch compare`` and search objectives (``zeroshot_clean``, ``zeroshot_robust``) all call.
"""

from __future__ import annotations

import time
from pathlib import Path

from trainables.data.benchmark_prompts import TECOA_TEMPLATES
from trainables.errors import must
from trainables.evaluate import (
    AttackSettings,
    attacked_accuracy,
    autoattack_accuracy,
    level_accuracy,
    projection_share,
    robustness_profile,
)
from trainables.radii import format_eps
from trainables.readers import expanded, is_file
from trainables.suite_files import (  # noqa: F401  (also imported from here)
    SUITE_SUFFIXES,
    TEMPLATE_SETS,
    Suite,
    SuiteDataset,
    load_suite,
)

EVAL_SPLITS = ("val", "test")


#: Every suite by name. The embedded one is the zero-shot side of the embedded default: the base
#: model learnt these classes in pretraining; fine-tuning on ``embedded`` never sees them. Its
#: radii are larger than real data's 1/255-4/255: 32x32 renders need more to bite (README).
SUITES: dict[str, Suite] = {
    "embedded-zeroshot": Suite(
        name="embedded-zeroshot",
        datasets=(
            SuiteDataset(
                "embedded-heldout-shapes", ("a photo of a {}.",), trees="embedded-heldout-shapes"
            ),
            SuiteDataset("embedded-colour", ("a photo of a {} shape.",)),
            SuiteDataset("embedded-size", ("a photo of a {} shape.",)),
            SuiteDataset("embedded-background", ("a photo of a shape on a {} background.",)),
        ),
        eps=(2 / 255, 4 / 255, 8 / 255),
        headline_eps=4 / 255,
        description="held-out shapes (with a tree), colour, size and background of the renders",
        excludes=("embedded",),
    ),
}


#: The datasets of the TeCoA evaluation line (TeCoA, PMG-AFT, TGA-ZSR and the paper), in the
#: order its tables use: ImageNet (in-distribution when fine-tuning on it), TinyImageNet and the
#: 14 zero-shot datasets.
TECOA16: tuple[str, ...] = (
    "imagenet1k", "tinyimagenet", "cifar10", "cifar100", "stl10", "sun397", "food101", "pets",
    "flowers", "dtd", "eurosat", "fgvc_aircraft", "caltech101", "caltech256", "cars", "pcam",
)  # fmt: skip

#: The shipped WordNet trees of tecoa16's datasets (a per-level profile); the rest are flat
#: class lists until trees are built for them.
_TECOA16_TREES = {
    "imagenet1k": "imagenet1k-wordnet",
    "cifar10": "cifar10-wordnet",
    "cifar100": "cifar100-wordnet",
}

SUITES["tecoa16"] = Suite(
    name="tecoa16",
    datasets=tuple(
        SuiteDataset(name, TECOA_TEMPLATES, trees=_TECOA16_TREES.get(name), samples=1000)
        for name in TECOA16
    ),
    eps=(1 / 255, 2 / 255, 4 / 255),
    headline_eps=1 / 255,
    description=(
        "the 16 datasets of the TeCoA line, its single template, 1,000 images each; files "
        "under data.root (README, Datasets on disk)"
    ),
)


def get_suite(name: str) -> Suite:
    """A shipped suite by name, or the suite of a YAML file (:func:`load_suite`)."""
    if name in SUITES:
        return SUITES[name]
    if Path(name).suffix.lower() in SUITE_SUFFIXES and is_file(expanded(name)):
        return load_suite(expanded(name))
    raise must("suite", f"one of {', '.join(map(repr, SUITES))} or a suite YAML file", name)


def suite_forest(entry: SuiteDataset, data_root=None):
    """The forest a suite dataset is classified with: its trees, or one flat class list
    (``data_root``: where the dataset is when the entry names no root)."""
    from trainables.data.class_lists import dataset_classes, dataset_labels
    from trainables.hierarchy.shipped import resolve
    from trainables.hierarchy.tree import ClassTree, as_forest

    root = entry.root or data_root
    classes = dataset_classes(entry.dataset, root)
    if entry.trees is None:
        labels = dict(zip(classes, dataset_labels(entry.dataset, root), strict=True))
        return as_forest(ClassTree.flat(entry.dataset, classes, labels=labels))
    forest = as_forest(resolve(entry.trees))
    if forest.leaves != classes:
        raise must(
            f"trees of {entry.dataset}", "trees over its classes in label order", entry.trees
        )
    return forest


def check_on_disk(suite: Suite, data_root=None) -> None:
    """Fail now, with the one line of what is missing, if a dataset of ``suite`` read from
    files is not usable under its root (before hours of training, not after)."""
    from trainables.data.embedded_spec import RECIPES
    from trainables.data.registry import describe_on_disk

    for entry in suite.datasets:
        if entry.dataset not in RECIPES:
            describe_on_disk(entry.dataset, entry.root or data_root)


def class_names(forest) -> set[str]:
    """Every class a forest names: its leaves and the nodes of every level of every tree."""
    return {
        name
        for tree in forest.trees
        for level in range(tree.depth + 1)
        for name in tree.level_names(level)
    }


def check_disjoint(suite: Suite, fine_tuning_forest) -> None:
    """Refuse a suite whose embedded datasets share a class (at any level) with the fine-tuning
    forest.

    Only the embedded datasets are built to hold classes fine-tuning never sees. A suite of real
    datasets follows its protocol, whose datasets overlap by design (ImageNet is one of TeCoA's
    16, CIFAR-10's dogs are ImageNet dogs): its reports mark the fine-tuning dataset as
    in-distribution instead (:func:`evaluate_suite`'s ``fine_tuned_on``).
    """
    from trainables.data.embedded_spec import RECIPES

    seen = class_names(fine_tuning_forest)
    for entry in suite.datasets:
        if entry.dataset not in RECIPES:
            continue
        shared = sorted(class_names(suite_forest(entry)) & seen)
        if shared:
            raise must(
                f"suite {suite.name}",
                "datasets whose classes fine-tuning never sees",
                f"{entry.dataset} shares {shared}",
            )


def _mean(results: list[dict], key: str) -> float:
    """The mean of one headline number over dataset results (AutoAttack's at the leaf)."""
    values = [
        result["autoattack"]["leaf"] if key == "autoattack" else result[key] for result in results
    ]
    return sum(values) / len(values)


def evaluate_suite(
    classifier,
    suite: Suite | str,
    *,
    split: str = "val",
    samples: int | None = None,
    eps: tuple[float, ...] | None = None,
    steps: int | None = None,
    profile: bool = True,
    autoattack: bool = False,
    autoattack_steps: int = 100,
    seed: int = 0,
    data_root=None,
    fine_tuned_on: str | None = None,
) -> dict:
    """Clean and robust zero-shot accuracy of ``classifier``'s model on every suite dataset.

    The classifier's image encoder and head are reused with each dataset's classes and prompts
    (:meth:`~trainables.model.ZeroShotClassifier.with_forest`). Per dataset: ``clean`` (leaf
    accuracy), ``robust`` (leaf accuracy under PGD at the suite's headline eps), ``pgd`` (the
    curve over ``eps``), ``levels`` (clean accuracy at every level of every tree), and with
    ``profile`` the per-level robustness profile for datasets with trees; with ``autoattack``,
    AutoAttack (APGD-CE + APGD-T) at the headline eps on the leaf and on every superclass
    level. ``average`` is the unweighted mean over datasets. Settings sit beside the numbers.

    ``split`` is "val" for anything that selects (objectives, promotion) and "test" for reports.
    A dataset named ``fine_tuned_on`` (the fine-tuning dataset) is marked ``in_distribution``
    and left out of ``average``, the zero-shot mean; ``average_all`` then includes it (the mean
    of the TeCoA line's tables).
    """
    from trainables.data.registry import load_split

    suite = get_suite(suite) if isinstance(suite, str) else suite
    if split not in EVAL_SPLITS:
        raise must("split", f"one of {list(EVAL_SPLITS)}", split)
    radii = tuple(eps) if eps is not None else suite.eps
    headline = suite.headline_eps if suite.headline_eps in radii else radii[len(radii) // 2]
    steps = steps or suite.steps
    started = time.perf_counter()
    datasets = {}
    for entry in suite.datasets:
        forest = suite_forest(entry, data_root)
        zero_shot = classifier.with_forest(forest, templates=entry.templates).eval()
        data = load_split(
            entry.dataset,
            split,
            root=entry.root or data_root,
            image_size=classifier.image_size,
            samples=samples if samples is not None else entry.samples,
        )
        images, labels = data.images, data.labels
        tree = forest.trees[0].name
        levels = level_accuracy(zero_shot, images, labels)
        curve = {}
        for radius in radii:
            attack = AttackSettings(eps=radius, steps=steps, seed=seed)
            curve[format_eps(radius)] = attacked_accuracy(
                zero_shot, images, labels, attack, tree=tree
            )[tree][0]
        result = {
            "classes": len(forest.leaves),
            "chance": 1 / len(forest.leaves),
            "samples": int(len(labels)),
            "templates": list(entry.templates),
            "in_distribution": entry.dataset == fine_tuned_on,
            "clean": levels[tree][0],
            "robust": curve[format_eps(headline)],
            "pgd": curve,
            "levels": levels,
        }
        share = projection_share(zero_shot, images)
        if share is not None:
            result["at_projection_radius"] = share
        has_levels = any(t.depth > 0 for t in forest.trees)
        if profile and has_levels:
            attack = AttackSettings(eps=headline, steps=steps, seed=seed)
            result["profile"] = robustness_profile(zero_shot, images, labels, attack)
        if autoattack:
            result["autoattack"] = autoattack_levels(
                zero_shot, images, labels, headline, autoattack_steps, seed
            )
        datasets[entry.key] = result
    keys = ("clean", "robust", "autoattack") if autoattack else ("clean", "robust")
    results = list(datasets.values())
    zero_shot = [result for result in results if not result["in_distribution"]] or results
    average = {key: _mean(zero_shot, key) for key in keys}
    extra = {}
    if len(zero_shot) < len(results):
        extra["average_all"] = {key: _mean(results, key) for key in keys}
    return {
        "suite": suite.name,
        "split": split,
        "settings": {
            "attack": AttackSettings(eps=headline, steps=steps, seed=seed).describe(),
            "eps": [format_eps(radius) for radius in radii],
            "eps_values": list(radii),
            "headline_eps": format_eps(headline),
            "autoattack": {"steps": autoattack_steps, "attacks": "apgd-ce + apgd-t"}
            if autoattack
            else None,
        },
        "datasets": datasets,
        "average": average,
        **extra,
        "seconds": round(time.perf_counter() - started, 1),
    }


def autoattack_levels(zero_shot, images, labels, eps, steps, seed) -> dict:
    """AutoAttack accuracy at the leaf and at every superclass level of every tree."""
    first = zero_shot.layout.tree_names[0]
    out = {
        "leaf": autoattack_accuracy(
            zero_shot, images, labels, eps=eps, steps=steps, tree=first, seed=seed
        )["accuracy"]
    }
    for tree in zero_shot.layout.tree_names:
        for level in range(1, zero_shot.layout.depth(tree) + 1):
            out[f"{tree}/{level}"] = autoattack_accuracy(
                zero_shot, images, labels, eps=eps, steps=steps, tree=tree, level=level, seed=seed
            )["accuracy"]
    return out


def summary_metrics(report: dict, prefix: str = "zeroshot") -> dict[str, float]:
    """Flat metrics of a suite report for MLflow and Tune: per dataset and averaged.

    ``zeroshot/<dataset>/clean``, ``zeroshot/<dataset>/robust``, ``zeroshot_clean``,
    ``zeroshot_robust`` (and ``zeroshot_autoattack`` when measured).
    """
    metrics = {}
    for name, result in report["datasets"].items():
        metrics[f"{prefix}/{name}/clean"] = result["clean"]
        metrics[f"{prefix}/{name}/robust"] = result["robust"]
    for key, value in report["average"].items():
        metrics[f"{prefix}_{key}"] = value
    return metrics
