"""Zero-shot evaluation: clean accuracy at every level, robust accuracy under attack.

Evaluators compute and return plain data (dicts of floats with their settings beside them); the
CLI, MLflow and Tune layers only format or log what these functions return.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch

from trainables.attacks import PGD, AutoAttack
from trainables.errors import must
from trainables.model import LevelHead, ZeroShotClassifier


@dataclass(frozen=True)
class AttackSettings:
    """An L-inf/L2 PGD attack, as recorded beside every robust number."""

    eps: float = 4 / 255
    steps: int = 10
    step_size: float | None = None  # default: eps / 4, the step the embedded notes measured
    norm: str = "linf"
    seed: int = 0

    def __post_init__(self):
        if not self.eps > 0:
            raise must("eps", "> 0", self.eps)
        if self.steps < 1:
            raise must("steps", ">= 1", self.steps)

    @property
    def resolved_step_size(self) -> float:
        return self.step_size if self.step_size is not None else self.eps / 4

    def describe(self) -> dict:
        return {**asdict(self), "step_size": self.resolved_step_size, "random_start": True}

    def build(self, model: torch.nn.Module) -> PGD:
        generator = torch.Generator().manual_seed(self.seed)
        return PGD(
            model,
            eps=self.eps,
            steps=self.steps,
            step_size=self.resolved_step_size,
            norm=self.norm,
            generator=generator,
        )


@contextmanager
def eval_mode(module: torch.nn.Module):
    """Evaluate with frozen batch-norm statistics, then restore the module's mode."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def batches(
    images: torch.Tensor, labels: torch.Tensor, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for start in range(0, len(labels), batch_size):
        yield images[start : start + batch_size], labels[start : start + batch_size]


def _as_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] or float [0, 1] images -> float [0, 1]."""
    return images.float().div(255) if images.dtype == torch.uint8 else images.float()


@torch.no_grad()
def _level_hits(classifier: ZeroShotClassifier, images: torch.Tensor, labels: torch.Tensor):
    """Per (tree, level): number of correct predictions on one batch."""
    logits = classifier(images)
    hits = {}
    for (tree, level), node_slice in classifier.layout.slices.items():
        predicted = logits[:, node_slice].argmax(dim=1)
        target = classifier.layout.level_targets(labels, tree, level)
        hits[(tree, level)] = int((predicted == target).sum())
    return hits


def level_accuracy(
    classifier: ZeroShotClassifier,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    batch_size: int = 500,
) -> dict[str, dict[int, float]]:
    """Clean zero-shot accuracy at every level of every tree: ``{tree: {level: accuracy}}``."""
    totals: dict[tuple[str, int], int] = {}
    with eval_mode(classifier):
        for batch, batch_labels in batches(images, labels, batch_size):
            for key, hits in _level_hits(classifier, _as_float(batch), batch_labels).items():
                totals[key] = totals.get(key, 0) + hits
    return _nest(totals, len(labels))


def attacked_accuracy(
    classifier: ZeroShotClassifier,
    images: torch.Tensor,
    labels: torch.Tensor,
    attack: AttackSettings,
    *,
    tree: str,
    level: int = 0,
    batch_size: int = 500,
) -> dict[str, dict[int, float]]:
    """Accuracy at every level on adversarial images crafted against ``(tree, level)``."""
    totals: dict[tuple[str, int], int] = {}
    with eval_mode(classifier):
        pgd = attack.build(LevelHead(classifier, tree, level))
        for batch, batch_labels in batches(images, labels, batch_size):
            target = classifier.layout.level_targets(batch_labels, tree, level)
            adversarial = pgd(_as_float(batch), target)
            for key, hits in _level_hits(classifier, adversarial, batch_labels).items():
                totals[key] = totals.get(key, 0) + hits
    return _nest(totals, len(labels))


def _nest(totals: dict[tuple[str, int], int], count: int) -> dict[str, dict[int, float]]:
    nested: dict[str, dict[int, float]] = {}
    for (tree, level), hits in totals.items():  # the layout order: forest order, then level
        nested.setdefault(tree, {})[level] = hits / max(count, 1)
    return nested


def autoattack_accuracy(
    classifier: ZeroShotClassifier,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    eps: float,
    steps: int = 100,
    tree: str | None = None,
    level: int = 0,
    seed: int = 0,
    batch_size: int = 500,
) -> dict:
    """Accuracy at ``(tree, level)`` under AutoAttack (APGD-CE + APGD-T, via torchattacks).

    The final-number protocol of FARE: report it with a sample cap, beside its settings.
    """
    tree = tree or classifier.layout.tree_names[0]
    head = LevelHead(classifier, tree, level)
    node_slice = classifier.layout.slice_of(tree, level)
    n_classes = node_slice.stop - node_slice.start
    attack = AutoAttack(head, eps=eps, steps=steps, seed=seed, n_classes=n_classes)
    correct = 0
    with eval_mode(classifier):
        for batch, batch_labels in batches(images, labels, batch_size):
            target = classifier.layout.level_targets(batch_labels, tree, level)
            adversarial = attack(_as_float(batch), target)
            with torch.no_grad():
                correct += int((head(adversarial).argmax(dim=1) == target).sum())
    return {
        "accuracy": correct / max(len(labels), 1),
        "settings": {
            "attack": "autoattack",
            "attacks": list(attack.attacks_for(n_classes)),
            "eps": eps,
            "steps": steps,
            "norm": "linf",
            "seed": seed,
            "samples": int(len(labels)),
            "tree": tree,
            "level": level,
            "templates": list(classifier.templates),
        },
    }


def _mean_of(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


def robustness_profile(
    classifier: ZeroShotClassifier,
    images: torch.Tensor,
    labels: torch.Tensor,
    attack: AttackSettings,
    *,
    trees: list[str] | None = None,
    batch_size: int = 500,
) -> dict:
    """The per-level robustness profile (METHOD.md, "Evaluation protocol").

    Returns plain data:

    - ``clean``: accuracy at every level of every tree;
    - ``leaf_attack``: accuracy at every level under the leaf PGD (``robust_leaf`` = its leaf
      accuracy);
    - ``superclass_attacks[tree][level]``: under the PGD that maximises level ``level``'s
      cross-entropy, ``{"level": accuracy at that level, "leaf": leaf accuracy}``; the leaf
      accuracy is the transfer of level-``level`` adversarial examples to the leaf;
    - ``transfer``: the mean of those leaf accuracies over every superclass level;
    - ``settings``: the attack, sample count and templates, recorded beside the numbers.
    """
    layout = classifier.layout
    trees = list(trees) if trees is not None else list(layout.tree_names)
    clean = level_accuracy(classifier, images, labels, batch_size=batch_size)
    leaf_tree = layout.tree_names[0]
    leaf = attacked_accuracy(
        classifier, images, labels, attack, tree=leaf_tree, level=0, batch_size=batch_size
    )
    superclass: dict[str, dict[int, dict[str, float]]] = {}
    for tree in trees:
        for level in range(1, layout.depth(tree) + 1):
            attacked = attacked_accuracy(
                classifier, images, labels, attack, tree=tree, level=level, batch_size=batch_size
            )
            superclass.setdefault(tree, {})[level] = {
                "level": attacked[tree][level],
                "leaf": attacked[tree][0],
            }
    transfer = _mean_of(cell["leaf"] for levels in superclass.values() for cell in levels.values())
    return {
        "settings": {
            "attack": attack.describe(),
            "samples": int(len(labels)),
            "templates": list(classifier.templates),
        },
        "clean": clean,
        "clean_leaf": clean[leaf_tree][0],
        "leaf_attack": leaf,
        "robust_leaf": leaf[leaf_tree][0],
        "superclass_attacks": superclass,
        "transfer": transfer,
    }


def zero_shot_report(
    classifier: ZeroShotClassifier,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    attack: AttackSettings | None = None,
    batch_size: int = 500,
) -> dict:
    """Clean accuracy per level and leaf accuracy under a leaf-level PGD, with settings."""
    attack = attack or AttackSettings()
    clean = level_accuracy(classifier, images, labels, batch_size=batch_size)
    first_tree = classifier.forest.trees[0].name
    attacked = attacked_accuracy(
        classifier, images, labels, attack, tree=first_tree, level=0, batch_size=batch_size
    )
    return {
        "samples": int(len(labels)),
        "templates": list(classifier.templates),
        "clean": clean,
        "pgd_leaf": {"attack": attack.describe(), "leaf": attacked[first_tree][0]},
    }
