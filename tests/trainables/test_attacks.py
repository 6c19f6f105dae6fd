from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainables.attacks import PGD
from trainables.errors import UserInputError


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 16), nn.ReLU(), nn.Linear(16, 5))


def _batch():
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(32, 3, 8, 8, generator=generator)
    labels = torch.randint(0, 5, (32,), generator=generator)
    return images, labels


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_stays_in_the_ball_and_in_image_range(norm):
    model = _model()
    images, labels = _batch()
    eps = 8 / 255 if norm == "linf" else 0.5
    adversarial = PGD(model, eps=eps, steps=5, norm=norm)(images, labels)
    delta = adversarial - images
    assert adversarial.min() >= 0 and adversarial.max() <= 1
    if norm == "linf":
        assert delta.abs().max() <= eps + 1e-6
    else:
        assert delta.flatten(1).norm(dim=1).max() <= eps + 1e-5
    assert delta.abs().max() > 0


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_raises_the_attacked_loss(norm):
    model = _model()
    images, labels = _batch()
    eps = 8 / 255 if norm == "linf" else 0.5
    clean_loss = F.cross_entropy(model(images), labels)
    adversarial = PGD(model, eps=eps, steps=10, norm=norm, random_start=False)(images, labels)
    assert F.cross_entropy(model(adversarial), labels) > clean_loss + 1e-3


def test_pgd_leaves_parameter_grads_and_mode_untouched():
    model = _model()
    model.train()
    images, labels = _batch()
    PGD(model, eps=4 / 255, steps=3)(images, labels)
    assert all(parameter.grad is None for parameter in model.parameters())
    assert model.training
    # Existing gradients are not modified either.
    F.cross_entropy(model(images), labels).backward()
    before = [parameter.grad.clone() for parameter in model.parameters()]
    PGD(model, eps=4 / 255, steps=3)(images, labels)
    assert all(torch.equal(b, p.grad) for b, p in zip(before, model.parameters(), strict=True))


def test_pgd_is_reproducible_with_a_generator():
    model = _model()
    images, labels = _batch()
    runs = [
        PGD(model, eps=4 / 255, steps=2, generator=torch.Generator().manual_seed(3))(images, labels)
        for _ in range(2)
    ]
    assert torch.equal(runs[0], runs[1])


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"eps": 0, "steps": 3}, "eps"),
        ({"eps": 0.1, "steps": 0}, "steps"),
        ({"eps": 0.1, "steps": 1, "norm": "l1"}, "norm"),
    ],
)
def test_pgd_rejects_bad_settings(kwargs, field):
    with pytest.raises(UserInputError, match=f"`{field}` must be"):
        PGD(_model(), **kwargs)


def test_pgd_restores_each_submodule_mode():
    model = _model()
    model.train()
    model[1].eval()  # a frozen part stays frozen after the attack
    images, labels = _batch()
    PGD(model, eps=4 / 255, steps=1)(images, labels)
    assert model.training and not model[1].training and model[3].training
