"""The fine-tuning methods: what each one attacks, which loss it minimises, what it trains.

Every method is a :class:`Method` with two calls that :func:`trainables.training.training_step`
uses: :meth:`Method.perturb` (the training attack, run on the unwrapped classifier) and
:meth:`Method.loss_terms` (one forward of the trained model, possibly DDP-wrapped, then the loss).

- ``clip``: plain CLIP, no fine-tuning (the no-defense reference).
- ``tecoa``, ``pmg``, ``fare``: the flat baselines of REFERENCE.md on the euclidean head.
- ``hrz``: the method (METHOD.md) on the first tree; ``hrz-forest``: on every tree.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from trainables.attacks import (
    PGD,
    EmbeddingPGD,
    LevelObjective,
    check_radius_and_steps,
    hierarchical_perturbations,
)
from trainables.baseline_losses import FARELoss, PMGAFTLoss, TeCoALoss
from trainables.errors import must
from trainables.head import HeadOutput, HeadSettings
from trainables.losses import HierarchicalLoss, HierarchicalSettings
from trainables.model import DEFAULT_TEMPLATES, ZeroShotClassifier

METHOD_NAMES = ("clip", "tecoa", "pmg", "fare", "hrz", "hrz-forest")
STRATEGIES = ("leaf", "per_level", "universal")


@dataclass(frozen=True)
class TrainingAttack:
    """The perturbation crafted at every training step.

    Attributes:
        eps: L-inf radius in [0, 1] pixel units. Default 4/255 (the embedded default; the paper
            trains ViT-B/32 at 1/255 — see README "Embedded default" for why larger here).
        steps: PGD steps K. Default 2 (TeCoA and PMG-AFT use 2; the method 3, FARE 10; the
            comparison gives every method the same K for the same budget).
        step_size: default ``eps / steps * 1.25`` (reaches the boundary in K sign steps).
        strategy: the method's perturbation: ``"leaf"`` (attack the leaf level only),
            ``"per_level"`` (one perturbation per level of every tree) or ``"universal"`` (one
            perturbation against the weighted sum over all levels and trees; the paper's best).
            The flat baselines always attack the leaf (FARE: its embedding-space loss).
        text_eps: L-inf radius of the text-embedding perturbation of the method (METHOD.md,
            eps_T = 2e-4); 0 disables it. Ignored by the baselines, whose text side is frozen.
    """

    eps: float = 4 / 255
    steps: int = 2
    step_size: float | None = None
    strategy: str = "universal"
    text_eps: float = 2e-4

    def __post_init__(self):
        check_radius_and_steps(self.eps, self.steps, "attack.")
        if self.step_size is not None and not self.step_size > 0:
            raise must("attack.step_size", "> 0 or null", self.step_size)
        if self.strategy not in STRATEGIES:
            raise must("attack.strategy", f"one of {list(STRATEGIES)}", self.strategy)
        if self.text_eps < 0:
            raise must("attack.text_eps", ">= 0", self.text_eps)

    @property
    def resolved_step_size(self) -> float:
        return self.step_size if self.step_size is not None else 1.25 * self.eps / self.steps


@dataclass(frozen=True)
class MethodSettings:
    """One method and every setting of it.

    Attributes:
        name: one of ``clip, tecoa, pmg, fare, hrz, hrz-forest``.
        trees: trees the hierarchical loss aligns (in order); None = the method's default (the
            first tree for ``hrz``, every tree for ``hrz-forest``).
        depths: optional depth per aligned tree (a tree is cut to its levels nearest the root).
        head: the head geometry and its parameters.
        loss: the hierarchical loss settings (``hrz``/``hrz-forest`` only).
        attack: the training attack.
        templates: prompt templates of every node.
        pmg_weights: weights of PMG-AFT's two KL terms (reference: 1 and 1).
    """

    name: str = "hrz-forest"
    trees: tuple[str, ...] | None = None
    depths: tuple[int, ...] | None = None
    head: HeadSettings = field(default_factory=HeadSettings)
    loss: HierarchicalSettings = field(default_factory=HierarchicalSettings)
    attack: TrainingAttack = field(default_factory=TrainingAttack)
    templates: tuple[str, ...] = DEFAULT_TEMPLATES

    def __post_init__(self):
        if self.name not in METHOD_NAMES:
            raise must("method.name", f"one of {list(METHOD_NAMES)}", self.name)
        if self.depths is not None and (self.trees is None or len(self.depths) != len(self.trees)):
            raise must("method.depths", "one depth per tree of method.trees", self.depths)

    @property
    def hierarchical(self) -> bool:
        return self.name in ("hrz", "hrz-forest")


def method_settings(name: str, **overrides) -> MethodSettings:
    """The defaults of method ``name``: the head and attack it needs, plus ``overrides``."""
    if name not in METHOD_NAMES:
        raise must("method", f"one of {list(METHOD_NAMES)}", name)
    if name in ("hrz", "hrz-forest"):
        head = HeadSettings(geometry="hyperbolic", train_text_projection=True)
        attack = TrainingAttack()
    else:
        head = HeadSettings(geometry="euclidean")
        attack = TrainingAttack(strategy="leaf", text_eps=0.0)
    settings = MethodSettings(name=name, head=head, attack=attack)
    return replace(settings, **overrides)


def training_forest(settings: MethodSettings, forest):
    """The trees (and depths) the method aligns with."""
    if settings.trees is not None:
        unknown = [name for name in settings.trees if name not in forest]
        if unknown:
            raise must("method.trees", f"names of trees in {list(forest.names)}", unknown[0])
        return forest.select(list(settings.trees), settings.depths)
    if settings.name == "hrz":
        return forest.select([forest.names[0]])
    return forest


@dataclass
class Perturbation:
    """What the training attack produced for one batch."""

    images: torch.Tensor  # adversarial images [B, 3, H, W]
    text_delta: torch.Tensor | None = None  # [N, D] text perturbation (the method)
    by_level: dict[tuple[str, int], torch.Tensor] | None = None  # per-level strategy


class Method(ABC):
    """A fine-tuning method bound to its classifier (see module docstring)."""

    trains = True

    def __init__(self, settings: MethodSettings, classifier: ZeroShotClassifier, *, seed: int = 0):
        self.settings = settings
        self.classifier = classifier
        self.generator = torch.Generator().manual_seed(seed)

    def parameters(self) -> list[nn.Parameter]:
        """What the optimiser updates."""
        return self.classifier.freeze_for_finetuning()

    @abstractmethod
    def perturb(self, images: torch.Tensor, labels: torch.Tensor) -> Perturbation:
        """The training perturbation of one batch, crafted on the unwrapped classifier."""

    @abstractmethod
    def loss_terms(self, model, images, perturbation, labels, *, epoch: float = 0.0) -> dict:
        """Named loss terms of one batch, from one forward of ``model`` (maybe DDP-wrapped)."""

    def after_step(self) -> None:  # noqa: B027 - an optional hook, not an abstract step
        """Called after every optimiser step (nothing to do for most methods)."""

    def to(self, device: torch.device | str) -> Method:
        """Move the classifier and everything the method holds besides it (frozen reference
        models, loss buffers) to ``device``."""
        self.classifier.to(device)
        for value in vars(self).values():
            if isinstance(value, nn.Module) and value is not self.classifier:
                value.to(device)
        return self

    def _pgd(self, model, objective, *, model_kwargs=None, text_eps: float = 0.0) -> PGD:
        attack = self.settings.attack
        return PGD(
            model,
            eps=attack.eps,
            steps=attack.steps,
            step_size=attack.resolved_step_size,
            loss=objective,
            model_kwargs=model_kwargs,
            text_eps=text_eps,
            generator=self.generator,
        )


class NoFineTuning(Method):
    """Plain CLIP: evaluated as is (``fit`` returns at once; there is nothing to train)."""

    trains = False

    def perturb(self, images, labels):
        return Perturbation(images)  # no defense is trained, so no training attack either

    def loss_terms(self, model, images, perturbation, labels, *, epoch=0.0):
        raise must("method.name", "a method that fine-tunes (clip is evaluated as is)", "clip")


class TeCoA(Method):
    """CE of the adversarial leaf logits (Mao et al. 2023), leaf-level PGD."""

    def __init__(self, settings, classifier, *, seed=0):
        super().__init__(settings, classifier, seed=seed)
        self.loss = TeCoALoss(classifier.layout)
        self.objective = LevelObjective(classifier.layout, classifier.layout.tree_names[0], 0)

    def perturb(self, images, labels):
        return Perturbation(self._pgd(self.classifier, self.objective)(images, labels))

    def loss_terms(self, model, images, perturbation, labels, *, epoch=0.0):
        return self.loss(model(perturbation.images, return_embeddings=True), labels)


class PMGAFT(TeCoA):
    """CE + KL to the frozen original on the adversarial image + KL to the clean output."""

    def __init__(self, settings, classifier, *, seed=0):
        super().__init__(settings, classifier, seed=seed)
        self.loss = PMGAFTLoss(classifier.layout)
        self.reference = _frozen_copy(classifier)

    def loss_terms(self, model, images, perturbation, labels, *, epoch=0.0):
        adversarial = perturbation.images
        # One call for both batches keeps a DDP wrapper to one forward per step; each batch is
        # encoded on its own, as in the reference code (batch-norm statistics never mix).
        both = model(torch.cat([adversarial, images]), return_embeddings=True, separate_batches=2)
        adv_out, clean_out = _split(both, 2)
        with torch.no_grad():
            reference = self.reference(adversarial, return_embeddings=True)
        return self.loss(adv_out, clean_out, reference, labels)


class FARE(Method):
    """Unsupervised: keep adversarial features close to the original model's clean features."""

    def __init__(self, settings, classifier, *, seed=0):
        super().__init__(settings, classifier, seed=seed)
        self.loss = FARELoss()
        self.reference = _frozen_copy(classifier)
        self._targets: torch.Tensor | None = None

    def perturb(self, images, labels):
        with torch.no_grad():
            self._targets = self.reference.encode_images(images)
        attack = self.settings.attack
        embedding_attack = EmbeddingPGD(
            self.classifier.encode_images,
            eps=attack.eps,
            steps=attack.steps,
            step_size=attack.resolved_step_size,
            generator=self.generator,
        )
        return Perturbation(embedding_attack(images, self._targets))

    def loss_terms(self, model, images, perturbation, labels, *, epoch=0.0):
        features = model(perturbation.images, return_embeddings=True).features
        return self.loss(features, self._targets)


class Hierarchical(Method):
    """The method: HITA + HNSA + L_vic + L_gap in the Poincare ball, against one universal
    perturbation of images and text (or leaf-only / per-level perturbations)."""

    def __init__(self, settings, classifier, *, seed=0):
        super().__init__(settings, classifier, seed=seed)
        self.loss = HierarchicalLoss(classifier.layout, settings.loss)
        self.epoch = 0.0

    def perturb(self, images, labels):
        attack = self.settings.attack
        universal = attack.strategy == "universal"
        found = hierarchical_perturbations(
            self.classifier,
            images,
            labels,
            strategy=attack.strategy,
            eps=attack.eps,
            steps=attack.steps,
            step_size=attack.resolved_step_size,
            # Per-level batches share one text side in the loss, so only images are perturbed.
            text_eps=0.0 if attack.strategy == "per_level" else attack.text_eps,
            # The universal perturbation maximises the training loss's own hierarchical term.
            objective=self.loss.hita_objective(epoch=self.epoch) if universal else None,
            model_kwargs={"return_embeddings": True} if universal else None,
            generator=self.generator,
        )
        if attack.strategy == "per_level":
            by_level = {key: adversarial.images for key, adversarial in found.items()}
            leaf = by_level[(self.classifier.layout.tree_names[0], 0)]
            return Perturbation(leaf, None, by_level)
        (adversarial,) = found.values()
        return Perturbation(adversarial.images, adversarial.text_delta)

    def loss_terms(self, model, images, perturbation, labels, *, epoch=0.0):
        self.epoch = epoch
        if perturbation.by_level is None:
            output = model(
                perturbation.images, text_delta=perturbation.text_delta, return_embeddings=True
            )
            return self.loss(output, labels, epoch=epoch)
        # Distinct adversarial batches, one forward for all of them.
        keys = list(perturbation.by_level)
        distinct: dict[int, torch.Tensor] = {}
        for key in keys:
            distinct.setdefault(id(perturbation.by_level[key]), perturbation.by_level[key])
        order = list(distinct)
        stacked = torch.cat([distinct[i] for i in order])
        outputs = _split(
            model(stacked, return_embeddings=True, separate_batches=len(order)), len(order)
        )
        by_id = dict(zip(order, outputs, strict=True))
        by_level = {key: by_id[id(perturbation.by_level[key])] for key in keys}
        leaf = by_id[id(perturbation.images)]
        return self.loss(leaf, labels, epoch=epoch, by_level=by_level)


def _frozen_copy(classifier: ZeroShotClassifier) -> ZeroShotClassifier:
    reference = copy.deepcopy(classifier).eval()
    reference.requires_grad_(False)
    return reference


def _split(output: HeadOutput, parts: int) -> list[HeadOutput]:
    """Split a batched :class:`HeadOutput` into ``parts`` equal batches sharing the text side."""
    chunks = zip(
        output.image.chunk(parts),
        output.logits.chunk(parts),
        output.features.chunk(parts),
        strict=True,
    )
    return [
        replace(output, image=image, logits=logits, features=features)
        for image, logits, features in chunks
    ]


_METHOD_CLASSES = {
    "clip": NoFineTuning,
    "tecoa": TeCoA,
    "pmg": PMGAFT,
    "fare": FARE,
    "hrz": Hierarchical,
    "hrz-forest": Hierarchical,
}


def build_method(
    settings: MethodSettings,
    loaded,
    forest,
    *,
    calibration_images: torch.Tensor | None = None,
    seed: int = 0,
) -> Method:
    """Bind ``settings`` to a fresh classifier on ``loaded`` (whose weights it will train).

    The classifier covers the trees the method aligns (``training_forest``); evaluate through
    ``method.classifier.with_forest(full_forest)`` to score every tree with the same weights.
    ``calibration_images`` (float [0, 1]) set the hyperbolic image scale deterministically.
    """
    trees = training_forest(settings, forest)
    classifier = ZeroShotClassifier(loaded, trees, templates=settings.templates, head=settings.head)
    if calibration_images is not None:
        classifier.calibrate_image_scale(calibration_images)
    return _METHOD_CLASSES[settings.name](settings, classifier, seed=seed)
