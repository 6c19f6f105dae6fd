"""Adversarial attacks on [0, 1] images.

Attacks are tiny classes (STYLE.md, after torchattacks): :class:`Attack` switches the model to
eval mode for the attack and restores its mode afterwards, and differentiates only with respect
to the perturbation, so the model's parameters never accumulate ``.grad`` during an attack.
Each subclass implements only its loop.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from trainables.errors import must

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Attack(ABC):
    """Base class: runs :meth:`perturb` in eval mode, then restores every submodule's mode."""

    def __init__(self, model: nn.Module):
        self.model = model

    @abstractmethod
    def perturb(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Return adversarial images for ``images`` (detached inputs, any grad mode)."""

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # Restore every submodule's own flag: a blanket train(True) would wake up frozen parts.
        modes = [(module, module.training) for module in self.model.modules()]
        self.model.eval()
        try:
            return self.perturb(images.detach(), labels.detach()).detach()
        finally:
            for module, training in modes:
                module.training = training


class PGD(Attack):
    """Projected gradient descent (Madry et al.) maximising ``loss(model(x + delta), labels)``.

    Input range [0, 1]. Norm ``"linf"`` (sign steps) or ``"l2"`` (normalised-gradient steps).

    Args:
        model: maps [0, 1] images to logits of the attacked objective.
        eps: radius of the perturbation ball, in [0, 1] pixel units (1/255 = one grey level).
        steps: number of gradient steps.
        step_size: size of each step; default ``2.5 * eps / steps`` (Madry's rule).
        random_start: start from a uniform point of the ball (L-inf) or a random direction (L2).
        loss: objective to maximise, default cross-entropy.
        generator: seeds the random start, for reproducible attacks.
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
        loss: Loss | None = None,
        generator: torch.Generator | None = None,
    ):
        super().__init__(model)
        if not eps > 0:
            raise must("eps", "> 0", eps)
        if steps < 1:
            raise must("steps", ">= 1", steps)
        if norm not in ("linf", "l2"):
            raise must("norm", "'linf' or 'l2'", norm)
        self.eps, self.steps, self.norm = float(eps), int(steps), norm
        self.step_size = float(step_size) if step_size is not None else 2.5 * eps / steps
        self.random_start = random_start
        self.loss = loss or F.cross_entropy
        self.generator = generator

    def _random_start(self, images: torch.Tensor) -> torch.Tensor:
        noise = torch.rand(images.shape, generator=self.generator, device="cpu").to(images)
        if self.norm == "linf":
            return (2 * noise - 1) * self.eps
        direction = torch.randn(images.shape, generator=self.generator, device="cpu").to(images)
        direction = direction / _l2(direction).clamp_min(1e-12)
        radius = noise.flatten(1)[:, :1].view(-1, *[1] * (images.dim() - 1))
        return direction * radius * self.eps

    def _project(self, delta: torch.Tensor) -> torch.Tensor:
        if self.norm == "linf":
            return delta.clamp(-self.eps, self.eps)
        # Shrink only the perturbations outside the L2 ball.
        return delta * (self.eps / _l2(delta).clamp_min(self.eps))

    def perturb(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        delta = self._random_start(images) if self.random_start else torch.zeros_like(images)
        # Keep x + delta a valid image from the start.
        delta = (images + delta).clamp(0, 1) - images
        for _ in range(self.steps):
            delta.requires_grad_(True)
            loss = self.loss(self.model(images + delta), labels)
            (grad,) = torch.autograd.grad(loss, delta)
            with torch.no_grad():
                if self.norm == "linf":
                    step = grad.sign()
                else:
                    step = grad / _l2(grad).clamp_min(1e-12)
                delta = self._project(delta + self.step_size * step)
                delta = (images + delta).clamp(0, 1) - images
        return images + delta


def _l2(x: torch.Tensor) -> torch.Tensor:
    """Per-sample L2 norm, shaped to broadcast against ``x``."""
    return x.flatten(1).norm(dim=1).view(-1, *[1] * (x.dim() - 1))
