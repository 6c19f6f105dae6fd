"""The attack-strength checks must catch a head that masks its gradients.

The test double is a two-class "brightness" classifier whose logits are a smooth function of the
mean pixel value, but whose gradient is cut (``detach``): PGD's sign steps have nothing to follow,
so PGD reports it as perfectly robust, while the gradient-free Square attack, which only reads the
logits, breaks it. The honest twin (same logits, gradient kept) must pass every check.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainables.evaluate import GRADIENT_FREE_MARGIN, attack_strength, zero_gradient_share
from trainables.head import HeadLayout, HeadSettings
from trainables.hierarchy.tree import ClassTree, Forest

pytest.importorskip("torchattacks")


class BrightnessHead(nn.Module):
    """Class 0 "bright" when the mean pixel is above 0.5, class 1 "dark" otherwise."""

    def __init__(self, *, masked: bool):
        super().__init__()
        self.masked = masked
        self.forest = Forest([ClassTree.flat("brightness", ("bright", "dark"))])
        self.layout = HeadLayout.from_forest(self.forest)
        self.head = HeadSettings()  # euclidean: no projection radius to report
        # torchattacks reads the device from the first parameter; a real model has many.
        self.anchor = nn.Parameter(torch.zeros(()), requires_grad=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        mean = images.mean(dim=(1, 2, 3))
        if self.masked:
            mean = mean.detach() + 0.0 * mean  # same value, zero gradient
        return 50.0 * torch.stack([mean - 0.5, 0.5 - mean], dim=1)


def _near_threshold(n: int = 48):
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 2
    shift = torch.where(labels == 0, 0.01, -0.01).view(n, 1, 1, 1)
    noise = 0.1 * (torch.rand(n, 3, 8, 8, generator=generator) - 0.5)
    images = (0.5 + shift + noise - noise.mean(dim=(1, 2, 3), keepdim=True)).clamp(0, 1)
    return images, labels


def _check(head):
    images, labels = _near_threshold()
    return attack_strength(
        head,
        images,
        labels,
        eps=8 / 255,
        eps_grid=(2 / 255, 4 / 255, 8 / 255),
        steps_grid=(2, 5),
        square_queries=200,
    )


def test_a_gradient_masked_head_is_caught():
    result = _check(BrightnessHead(masked=True))
    assert result["clean"] == 1.0
    # PGD is fooled into calling it robust; Square is not.
    assert result["pgd"] > 0.9
    assert result["square"] < result["pgd"] - GRADIENT_FREE_MARGIN
    assert result["worst_case"] <= result["square"]
    assert result["zero_gradient_share"] == 1.0
    problems = " ".join(result["problems"])
    assert "Square" in problems and "masked" in problems and "zero gradient" in problems


def test_an_honest_head_passes_every_check():
    result = _check(BrightnessHead(masked=False))
    assert result["problems"] == []
    assert result["pgd"] < 0.1 and result["zero_gradient_share"] == 0.0
    # Accuracy falls as the radius grows (the check itself would have said so otherwise).
    curve = list(result["pgd_by_eps"].values())
    assert curve == sorted(curve, reverse=True) and curve[0] > curve[-1]


def test_zero_gradient_share_counts_only_vanished_gradients():
    images, labels = _near_threshold(8)
    assert zero_gradient_share(BrightnessHead(masked=True), images, labels) == 1.0
    assert zero_gradient_share(BrightnessHead(masked=False), images, labels) == 0.0
