"""Adversarial attacks on [0, 1] images, and the objectives they maximise.

Attacks are tiny classes (STYLE.md, after torchattacks): :class:`Attack` switches the model to
eval mode for the attack and restores every submodule's own mode afterwards, and differentiates
only with respect to the perturbation, so the model's parameters never accumulate ``.grad``
during an attack. Each subclass implements only its loop.

- :class:`PGD`: L-inf or L2 PGD on any objective; optionally perturbs the classifier's text
  embeddings jointly with the images (METHOD.md, "The attack used in training").
- :class:`EmbeddingPGD`: FARE's attack, which pushes image features away from reference
  features (REFERENCE.md).

AutoAttack and the gradient-free Square attack are :mod:`trainables.evaluation_attacks`.

Objectives work on the full logits ``[B, N]`` of a :class:`~trainables.model.ZeroShotClassifier`
(or on its :class:`~trainables.head.HeadOutput`), so one forward serves every level:
:class:`LevelObjective` is one level's cross-entropy and :class:`HierarchicalObjective` the
weighted sum over all levels of the selected trees. :func:`hierarchical_perturbations` builds the
three training strategies (``leaf``, ``per_level``, ``universal``) from them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from trainables.errors import must
from trainables.margins import level_weights
from trainables.numbers import is_finite_number, is_integer

#: ``objective(model_output, labels) -> scalar`` to maximise; the output is whatever the attacked
#: model returns (logits, or a ``HeadOutput`` with ``model_kwargs={"return_embeddings": True}``).
Objective = Callable[[Any, torch.Tensor], torch.Tensor]
# Kept for callers that name the objective a loss.
Loss = Objective

NORMS = ("linf", "l2")
STRATEGIES = ("leaf", "per_level", "universal")
#: Key of the single perturbation of the ``universal`` strategy.
UNIVERSAL = "all"


# --------------------------------------------------------------------------------------------
# Objectives
# --------------------------------------------------------------------------------------------


def logits_of(output: Any) -> torch.Tensor:
    """The logits of a model output: the tensor itself, or its ``.logits`` (a ``HeadOutput``)."""
    return output if isinstance(output, torch.Tensor) else output.logits


def check_radius_and_steps(eps: Any, steps: Any = None, section: str = "") -> None:
    """The one check of an attack's radius (a finite number > 0) and, when given, its number of
    steps (an integer >= 1); ``section`` prefixes the names in the error (``"attack."``)."""
    if not (is_finite_number(eps) and eps > 0):
        raise must(f"{section}eps", "> 0", eps)
    if steps is not None and not (is_integer(steps) and steps >= 1):
        raise must(f"{section}steps", ">= 1", steps)


class LevelObjective:
    """Cross-entropy of level ``level`` of tree ``tree`` (level 0 = the leaves).

    Takes the full logits ``[B, N]`` (or a ``HeadOutput``) and leaf labels ``[B]``; slices the
    level's logits and maps the labels with ``layout.level_targets``. Mean over the batch.
    """

    def __init__(self, layout, tree: str, level: int):
        self.layout = layout
        self.tree, self.level = tree, level
        self.node_slice = layout.slice_of(tree, level)

    def __call__(self, output: Any, labels: torch.Tensor) -> torch.Tensor:
        logits = logits_of(output)[:, self.node_slice]
        return F.cross_entropy(logits, self.layout.level_targets(labels, self.tree, self.level))


class HierarchicalObjective:
    """The universal objective: ``sum_T sum_{l=0..L_T} w_l CE(level-l logits, level-l targets)``.

    Args:
        layout: the classifier's :class:`~trainables.head.HeadLayout`.
        trees: trees summed over, default every tree of the layout. The leaf level is shared by
            every tree, so its cross-entropy counts once per selected tree (the per-tree sum of
            METHOD.md).
        weights: ``"linear"`` (default, ``w_l = 1 - l / (L_T + 1)``: levels near the leaves
            weigh more) or ``"uniform"`` (all 1).
    """

    def __init__(self, layout, *, trees: Sequence[str] | None = None, weights: str = "linear"):
        known = layout.tree_names
        trees = tuple(known if trees is None else trees)
        if not trees:
            raise must("trees", f"a non-empty selection of {list(known)}", list(trees))
        for tree in trees:
            if tree not in known:
                raise must("trees", f"names of trees in {list(known)}", tree)
        self.layout = layout
        self.trees = trees
        #: ``(weight, objective)`` for every selected ``(tree, level)``.
        self.terms: list[tuple[float, LevelObjective]] = [
            (weight, LevelObjective(layout, tree, level))
            for tree in trees
            for level, weight in enumerate(level_weights(layout.depth(tree), weights))
        ]

    def __call__(self, output: Any, labels: torch.Tensor) -> torch.Tensor:
        logits = logits_of(output)
        return sum(weight * objective(logits, labels) for weight, objective in self.terms)


# --------------------------------------------------------------------------------------------
# Attacks
# --------------------------------------------------------------------------------------------


def _module_of(model: Any) -> nn.Module | None:
    """The module whose mode an attack switches: the model, or the owner of a bound method."""
    if isinstance(model, nn.Module):
        return model
    owner = getattr(model, "__self__", None)
    return owner if isinstance(owner, nn.Module) else None


class Attack(ABC):
    """Base class: runs :meth:`perturb` in eval mode, then restores every submodule's mode.

    ``model`` is a module or a callable; a bound method of a module (such as
    ``classifier.encode_images``) switches its module's mode.
    """

    def __init__(self, model: nn.Module | Callable[..., Any]):
        self.model = model

    @abstractmethod
    def perturb(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Return adversarial images for ``images`` (detached inputs, any grad mode)."""

    @contextmanager
    def attack_mode(self) -> Iterator[None]:
        """Eval mode and gradients on for the attack (callers may sit under ``no_grad``);
        afterwards every submodule gets its own mode flag back."""
        module = _module_of(self.model)
        children = list(module.modules()) if module is not None else []
        # Restore each flag: a blanket train(True) would wake up frozen parts.
        modes = [child.training for child in children]
        if module is not None:
            module.eval()
        try:
            with torch.enable_grad():
                yield
        finally:
            for child, training in zip(children, modes, strict=True):
                child.training = training

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        with self.attack_mode():
            return self.perturb(images.detach(), targets.detach()).detach()


class Adversarial(NamedTuple):
    """What a joint image + text attack returns."""

    images: torch.Tensor  # adversarial images [B, 3, H, W] in [0, 1]
    text_delta: torch.Tensor | None  # [N, D] text perturbation, None without one


def _uniform(like: torch.Tensor, eps: float, generator: torch.Generator | None) -> torch.Tensor:
    """Uniform noise in [-eps, eps] shaped like ``like`` (drawn on the CPU: seedable anywhere)."""
    noise = torch.rand(like.shape, generator=generator, device="cpu").to(like)
    return (2 * noise - 1) * eps


def _into_image(images: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """The part of ``delta`` that keeps ``images + delta`` in [0, 1]."""
    # Clamp to the valid pixel range: the attacked image must stay an image.
    return (images + delta).clamp(0, 1) - images


class PGD(Attack):
    """Projected gradient descent (Madry et al.) maximising ``loss(model(x + delta), labels)``.

    Input range [0, 1]. Norm ``"linf"`` (sign steps) or ``"l2"`` (normalised-gradient steps).
    With ``text_eps > 0`` it also perturbs the classifier's text embeddings (L-inf, sign steps):
    the model is called as ``model(x + delta, text_delta=text_delta, **model_kwargs)`` and both
    perturbations ascend the same objective, one backward per step.

    Args:
        model: maps [0, 1] images to logits (or, with ``model_kwargs``, whatever ``loss`` takes);
            with ``text_eps > 0`` a classifier with ``text_delta_shape``.
        eps: radius of the image perturbation ball, in [0, 1] pixel units (1/255 = one grey
            level).
        steps: number of gradient steps.
        step_size: size of each image step; default ``2.5 * eps / steps`` (Madry's rule).
        norm: ``"linf"`` (default) or ``"l2"``, of the image perturbation.
        random_start: start from a uniform point of the ball (L-inf) or a random direction (L2);
            the text perturbation starts uniform in [-text_eps, text_eps].
        loss: objective to maximise, ``loss(output, labels) -> scalar``; default cross-entropy.
        text_eps: L-inf radius of the text perturbation; default 0 (images only). METHOD.md
            uses 2e-4.
        text_step_size: size of each text sign step; default ``text_eps``.
        model_kwargs: keyword arguments of every model call, e.g. ``{"return_embeddings": True}``
            for an objective that reads a ``HeadOutput``.
        generator: seeds the random starts, for reproducible attacks.

    ``pgd(images, labels)`` returns the adversarial images; :meth:`perturb_with_text` also
    returns the final text perturbation, which the training loss must reuse.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        eps: float,
        steps: int,
        step_size: float | None = None,
        norm: str = "linf",
        random_start: bool = True,
        loss: Objective | None = None,
        text_eps: float = 0.0,
        text_step_size: float | None = None,
        model_kwargs: dict[str, Any] | None = None,
        generator: torch.Generator | None = None,
    ):
        super().__init__(model)
        check_radius_and_steps(eps, steps)
        if step_size is not None and not step_size > 0:
            raise must("step_size", "> 0 or None", step_size)
        if norm not in NORMS:
            raise must("norm", "'linf' or 'l2'", norm)
        if not text_eps >= 0:
            raise must("text_eps", ">= 0", text_eps)
        if text_step_size is not None and not text_step_size > 0:
            raise must("text_step_size", "> 0 or None", text_step_size)
        if text_eps > 0 and getattr(model, "text_delta_shape", None) is None:
            raise must("text_eps", "0 for a model without a text_delta_shape", text_eps)
        self.eps, self.steps, self.norm = float(eps), int(steps), norm
        self.step_size = float(step_size) if step_size is not None else 2.5 * eps / steps
        self.random_start = random_start
        self.loss = loss or F.cross_entropy
        self.text_eps = float(text_eps)
        self.text_step_size = float(text_step_size) if text_step_size is not None else text_eps
        self.model_kwargs = dict(model_kwargs or {})
        self.generator = generator

    def _random_start(self, images: torch.Tensor) -> torch.Tensor:
        if self.norm == "linf":
            return _uniform(images, self.eps, self.generator)
        noise = torch.rand(images.shape, generator=self.generator, device="cpu").to(images)
        direction = torch.randn(images.shape, generator=self.generator, device="cpu").to(images)
        direction = direction / _l2(direction).clamp_min(1e-12)
        radius = noise.flatten(1)[:, :1].view(-1, *[1] * (images.dim() - 1))
        return direction * radius * self.eps

    def _project(self, delta: torch.Tensor) -> torch.Tensor:
        if self.norm == "linf":
            return delta.clamp(-self.eps, self.eps)
        # Shrink only the perturbations outside the L2 ball.
        return delta * (self.eps / _l2(delta).clamp_min(self.eps))

    def _text_start(self, like: torch.Tensor) -> torch.Tensor | None:
        if self.text_eps == 0:
            return None
        shape = tuple(self.model.text_delta_shape)
        zeros = torch.zeros(shape, dtype=like.dtype, device=like.device)
        return _uniform(zeros, self.text_eps, self.generator) if self.random_start else zeros

    def _forward(self, images: torch.Tensor, text_delta: torch.Tensor | None) -> Any:
        if text_delta is None:
            return self.model(images, **self.model_kwargs)
        return self.model(images, text_delta=text_delta, **self.model_kwargs)

    def _run(self, images: torch.Tensor, labels: torch.Tensor) -> Adversarial:
        delta = self._random_start(images) if self.random_start else torch.zeros_like(images)
        delta = _into_image(images, delta)
        text_delta = self._text_start(images)
        for _ in range(self.steps):
            variables = [delta.requires_grad_(True)]
            if text_delta is not None:
                variables.append(text_delta.requires_grad_(True))
            objective = self.loss(self._forward(images + delta, text_delta), labels)
            grads = torch.autograd.grad(objective, variables)
            with torch.no_grad():
                if self.norm == "linf":
                    step = grads[0].sign()
                else:
                    step = grads[0] / _l2(grads[0]).clamp_min(1e-12)
                delta = _into_image(images, self._project(delta + self.step_size * step))
                if text_delta is not None:
                    text_delta = text_delta + self.text_step_size * grads[1].sign()
                    text_delta = text_delta.clamp(-self.text_eps, self.text_eps)
        return Adversarial(images + delta.detach(), text_delta)

    def perturb(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self._run(images, labels).images

    def perturb_with_text(self, images: torch.Tensor, labels: torch.Tensor) -> Adversarial:
        """Adversarial images and the final text perturbation (None when ``text_eps`` is 0)."""
        with self.attack_mode():
            images_adv, text_delta = self._run(images.detach(), labels.detach())
        return Adversarial(images_adv.detach(), None if text_delta is None else text_delta.detach())


class EmbeddingPGD(Attack):
    """FARE's attack: maximise ``|encoder(x + delta) - target_features|^2`` in feature space.

    Input range [0, 1]; L-inf ball of radius ``eps``. The squared L2 distance is summed over the
    feature dimensions and averaged over the batch, on unnormalised features. Steps follow FARE's
    code: the sign of each gradient is accumulated with momentum, ``v = momentum * v +
    sign(grad)``, and the step is ``step_size * sign(v)``.

    Args:
        encoder: maps [0, 1] images to features ``[B, D]`` (e.g. ``classifier.encode_images``).
        eps: L-inf radius in [0, 1] pixel units.
        steps: number of steps; default 10 (FARE).
        step_size: default 1/255 (FARE).
        momentum: default 0.9 (FARE).
        random_start: start uniform in [-eps, eps] (FARE does).
        generator: seeds the random start.

    Call as ``attack(images, target_features)``, the targets being the frozen reference model's
    clean features.
    """

    def __init__(
        self,
        encoder: nn.Module | Callable[[torch.Tensor], torch.Tensor],
        *,
        eps: float,
        steps: int = 10,
        step_size: float = 1 / 255,
        momentum: float = 0.9,
        random_start: bool = True,
        generator: torch.Generator | None = None,
    ):
        super().__init__(encoder)
        check_radius_and_steps(eps, steps)
        if not step_size > 0:
            raise must("step_size", "> 0", step_size)
        if not 0 <= momentum < 1:
            raise must("momentum", "in [0, 1)", momentum)
        self.eps, self.steps, self.step_size = float(eps), int(steps), float(step_size)
        self.momentum = float(momentum)
        self.random_start = random_start
        self.generator = generator

    @staticmethod
    def distance(features: torch.Tensor, target_features: torch.Tensor) -> torch.Tensor:
        """Squared L2 distance summed over dimensions, averaged over the batch (FARE's loss)."""
        return ((features.float() - target_features.float()) ** 2).sum(-1).mean()

    def perturb(self, images: torch.Tensor, target_features: torch.Tensor) -> torch.Tensor:
        delta = _uniform(images, self.eps, self.generator) if self.random_start else None
        delta = torch.zeros_like(images) if delta is None else _into_image(images, delta)
        velocity = torch.zeros_like(images)
        for _ in range(self.steps):
            delta.requires_grad_(True)
            distance = self.distance(self.model(images + delta), target_features)
            (grad,) = torch.autograd.grad(distance, delta)
            with torch.no_grad():
                velocity = self.momentum * velocity + grad.sign()
                delta = delta + self.step_size * velocity.sign()
                delta = _into_image(images, delta.clamp(-self.eps, self.eps))
        return images + delta


def _l2(x: torch.Tensor) -> torch.Tensor:
    """Per-sample L2 norm, shaped to broadcast against ``x``."""
    return x.flatten(1).norm(dim=1).view(-1, *[1] * (x.dim() - 1))


# --------------------------------------------------------------------------------------------
# Training strategies
# --------------------------------------------------------------------------------------------


def hierarchical_perturbations(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    strategy: str,
    eps: float,
    steps: int,
    step_size: float | None = None,
    trees: Sequence[str] | None = None,
    weights: str = "linear",
    text_eps: float = 0.0,
    text_step_size: float | None = None,
    objective: Objective | None = None,
    model_kwargs: dict[str, Any] | None = None,
    generator: torch.Generator | None = None,
) -> dict[tuple[str, int] | str, Adversarial]:
    """The training perturbations of one batch under ``strategy`` (L-inf PGD, range [0, 1]).

    ``model`` is a :class:`~trainables.model.ZeroShotClassifier` (its ``layout`` names the
    levels); ``trees`` selects trees (default all). Strategies and the keys they return:

    - ``"leaf"``: one PGD on the leaf cross-entropy; key ``(first tree, 0)``.
    - ``"per_level"``: one PGD per level of every selected tree, keys ``(tree, level)``. The
      leaf level is shared by every tree, so it is attacked once and every tree's level-0 key
      holds that same result.
    - ``"universal"``: one PGD against :class:`HierarchicalObjective` (``trees``, ``weights``),
      or against ``objective`` when given (e.g. the training loss's own hierarchical term);
      key :data:`UNIVERSAL` (``"all"``).

    Each value is an :class:`Adversarial` (images, text delta or None); ``text_eps > 0`` perturbs
    the text embeddings jointly in every PGD. ``model_kwargs`` go to every model call.
    """
    if strategy not in STRATEGIES:
        raise must("strategy", f"one of {list(STRATEGIES)}", strategy)
    if objective is not None and strategy != "universal":
        raise must("objective", "None unless strategy is 'universal'", strategy)
    layout = model.layout
    trees = tuple(layout.tree_names if trees is None else trees)
    for tree in trees:
        if tree not in layout.tree_names:
            raise must("trees", f"names of trees in {list(layout.tree_names)}", tree)

    def attack(loss: Objective) -> Adversarial:
        pgd = PGD(
            model,
            eps=eps,
            steps=steps,
            step_size=step_size,
            loss=loss,
            text_eps=text_eps,
            text_step_size=text_step_size,
            model_kwargs=model_kwargs,
            generator=generator,
        )
        return pgd.perturb_with_text(images, labels)

    if strategy == "universal":
        loss = objective or HierarchicalObjective(layout, trees=trees, weights=weights)
        return {UNIVERSAL: attack(loss)}
    leaf = attack(LevelObjective(layout, trees[0], 0))
    if strategy == "leaf":
        return {(trees[0], 0): leaf}
    perturbations: dict[tuple[str, int] | str, Adversarial] = {}
    for tree in trees:
        perturbations[(tree, 0)] = leaf
        for level in range(1, layout.depth(tree) + 1):
            perturbations[(tree, level)] = attack(LevelObjective(layout, tree, level))
    return perturbations
