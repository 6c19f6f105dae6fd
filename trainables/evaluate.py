"""Zero-shot evaluation: clean accuracy at every level, robust accuracy under attack.

Evaluators compute and return plain data (dicts of floats with their settings beside them); the
CLI, MLflow and Tune layers only format or log what these functions return.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch

from trainables.attacks import PGD, check_radius_and_steps
from trainables.evaluation_attacks import AutoAttack, SquareAttack
from trainables.model import LevelHead, ZeroShotClassifier
from trainables.radii import format_eps


@dataclass(frozen=True)
class AttackSettings:
    """An L-inf/L2 PGD attack, as recorded beside every robust number."""

    eps: float = 4 / 255
    steps: int = 10
    step_size: float | None = None  # default: eps / 4, the step the embedded notes measured
    norm: str = "linf"
    seed: int = 0

    def __post_init__(self):
        check_radius_and_steps(self.eps, self.steps)

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


@torch.no_grad()
def projection_share(
    classifier: ZeroShotClassifier, images: torch.Tensor, *, batch_size: int = 500
) -> float | None:
    """Share of image embeddings clipped onto the projection radius (None: euclidean head).

    The Poincare head clips norms at ``(1 - eps) / sqrt(r)``; an embedding there has no radial
    gradient, which can mask gradient-based attacks. Report it beside hyperbolic results.
    """
    if not classifier.head.hyperbolic:
        return None
    clipped = 0
    with eval_mode(classifier):
        limit = (1 - classifier.head.boundary_eps) * (1 - 1e-5)
        for batch, _ in batches(images, torch.zeros(len(images)), batch_size):
            features = classifier.encode_images(_as_float(batch))
            embedded = classifier.image_embeddings(features)
            radius = embedded.norm(dim=-1) * classifier.curvature.sqrt()
            clipped += int((radius >= limit).sum())
    return clipped / max(len(images), 1)


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


#: How much a robust accuracy may rise with a stronger attack before the check calls it out
#: (random starts differ between runs; one or two images on a few hundred).
MONOTONE_TOLERANCE = 0.01
#: How far the gradient-free attack may beat PGD before PGD's number is called overstated.
GRADIENT_FREE_MARGIN = 0.05


@torch.no_grad()
def _correct(head, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return head(images).argmax(dim=1) == targets


def zero_gradient_share(head, images: torch.Tensor, targets: torch.Tensor) -> float:
    """Share of images whose cross-entropy gradient w.r.t. the pixels is exactly zero.

    A healthy head gives every correctly classified image a gradient; zeros (quantised or
    saturated logits, clipped norms) leave PGD's sign step nothing to follow.
    """
    images = images.detach().clone().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(head(images), targets, reduction="sum")
    (gradient,) = torch.autograd.grad(loss, images)
    return float((gradient.flatten(1).abs().amax(dim=1) == 0).float().mean())


def attack_strength(
    classifier: ZeroShotClassifier,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    eps: float,
    eps_grid: tuple[float, ...],
    steps_grid: tuple[int, ...] = (5, 10, 20),
    tree: str | None = None,
    level: int = 0,
    square_queries: int = 1000,
    seed: int = 0,
) -> dict:
    """The checks a robustness reviewer asks for before trusting a PGD number.

    On level ``level`` of ``tree`` (default: the leaves of the first tree):

    - ``pgd_by_eps``: PGD-``max(steps_grid)`` accuracy over ``eps_grid``; must not rise with eps;
    - ``pgd_by_steps``: PGD accuracy at ``eps`` over ``steps_grid``; must not rise with steps;
    - ``square``: the gradient-free Square attack at ``eps``; must not beat the strongest PGD by
      more than :data:`GRADIENT_FREE_MARGIN`;
    - ``worst_case``: accuracy when an image counts as broken if PGD or Square breaks it;
    - ``zero_gradient_share`` and, for a hyperbolic head, ``at_projection_radius``.

    ``problems`` lists every failed check in words (empty: the checks pass), so a gradient-masked
    head is caught rather than reported as robust.
    """
    tree = tree or classifier.layout.tree_names[0]
    head = LevelHead(classifier, tree, level)
    problems: list[str] = []
    with eval_mode(classifier):
        x = _as_float(images)
        targets = classifier.layout.level_targets(labels, tree, level)
        strongest = max(steps_grid)

        def pgd_correct(radius: float, steps: int) -> torch.Tensor:
            attack = AttackSettings(eps=radius, steps=steps, seed=seed).build(head)
            return _correct(head, attack(x, targets), targets)

        by_eps = {}
        for radius in sorted(eps_grid):
            by_eps[radius] = float(pgd_correct(radius, strongest).float().mean())
        by_steps, pgd_hits = {}, None
        for steps in sorted(steps_grid):
            hits = pgd_correct(eps, steps)
            by_steps[steps] = float(hits.float().mean())
            pgd_hits = hits
        square_hits = _correct(
            head,
            SquareAttack(head, eps=eps, queries=square_queries, seed=seed)(x, targets),
            targets,
        )
        clean_hits = _correct(head, x, targets)
        zero_share = (
            zero_gradient_share(head, x[clean_hits], targets[clean_hits])
            if bool(clean_hits.any())
            else 0.0
        )
    for name, curve in (("eps", by_eps), ("steps", by_steps)):
        values = list(curve.values())
        steps_up = zip(values, values[1:], strict=False)
        rises = [b - a for a, b in steps_up if b - a > MONOTONE_TOLERANCE]
        if rises:
            problems.append(f"PGD accuracy rises with {name} (by up to {max(rises):.3f})")
    square = float(square_hits.float().mean())
    pgd = by_steps[strongest]
    if pgd - square > GRADIENT_FREE_MARGIN:
        problems.append(
            f"the gradient-free Square attack ({square:.3f}) beats PGD-{strongest} ({pgd:.3f}) by "
            f"more than {GRADIENT_FREE_MARGIN}: gradients are masked, PGD overstates robustness"
        )
    if zero_share > 0.5:
        problems.append(f"{zero_share:.0%} of correctly classified images have zero gradient")
    return {
        "tree": tree,
        "level": level,
        "samples": int(len(labels)),
        "eps": eps,
        "clean": float(clean_hits.float().mean()),
        "pgd_by_eps": {format_eps(radius): acc for radius, acc in by_eps.items()},
        "pgd_by_steps": by_steps,
        "pgd": pgd,
        "square": square,
        "square_queries": square_queries,
        "worst_case": float((pgd_hits & square_hits).float().mean()),
        "zero_gradient_share": zero_share,
        "at_projection_radius": projection_share(classifier, images),
        "problems": problems,
    }
