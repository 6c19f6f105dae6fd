"""Margin schedules: each shape on hand-computed values, warm-up, the theorem shape, validation."""

from __future__ import annotations

import math

import pytest
import torch

from trainables.errors import UserInputError
from trainables.geometry import max_viable_margin
from trainables.margins import MarginSchedule, apply_margin, level_margins


def values(schedule: MarginSchedule, depth: int = 3, **kwargs) -> list[float]:
    return level_margins(schedule, depth, epoch=kwargs.pop("epoch", 1.0), **kwargs).tolist()


def test_defaults_are_implicit_margins():
    schedule = MarginSchedule()
    assert (schedule.shape, schedule.base, schedule.warmup_epochs) == ("constant", 0.0, 0.0)
    assert not schedule.enabled
    assert values(schedule) == [0.0] * 4


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        (MarginSchedule(shape="constant", base=0.5), [0.5, 0.5, 0.5, 0.5]),
        # (L + 1 - l) / (L + 1) with L = 3: 4/4, 3/4, 2/4, 1/4 -- largest at the leaves.
        (MarginSchedule(shape="linear", base=0.5), [0.5, 0.375, 0.25, 0.125]),
        (MarginSchedule(shape="geometric", base=0.5, ratio=0.5), [0.5, 0.25, 0.125, 0.0625]),
        (MarginSchedule(shape="geometric", base=2.0, ratio=1.0), [2.0, 2.0, 2.0, 2.0]),
    ],
)
def test_shapes_on_hand_computed_values(schedule, expected):
    assert values(schedule) == pytest.approx(expected)


def test_depth_zero_is_the_leaf_level_only():
    assert values(MarginSchedule(shape="linear", base=0.3), depth=0) == pytest.approx([0.3])


def test_warmup_ramps_linearly_with_fractional_epochs():
    schedule = MarginSchedule(shape="constant", base=0.4, warmup_epochs=2.0)
    assert values(schedule, epoch=0.0) == [0.0] * 4
    assert values(schedule, epoch=0.5) == pytest.approx([0.1] * 4)
    assert values(schedule, epoch=1.5) == pytest.approx([0.3] * 4)
    assert values(schedule, epoch=2.0) == pytest.approx([0.4] * 4)
    assert values(schedule, epoch=7.0) == pytest.approx([0.4] * 4)


def test_theorem_is_a_fraction_of_the_max_viable_margin():
    norms = torch.tensor([0.75, 0.5, 0.2])  # the ball's radius is 1/sqrt(1.5) ~ 0.816
    r = 1.5
    schedule = MarginSchedule(shape="theorem", base=2.0, kappa=0.25)
    got = level_margins(schedule, 2, epoch=0.0, level_norms=norms, curvature=torch.tensor(r))
    expected = 2.0 * 0.25 * max_viable_margin(norms, r)
    torch.testing.assert_close(got, expected)
    # Antipodal prototypes: (4 / sqrt r) artanh(sqrt(r) eta).
    closed = [0.5 * 4 / math.sqrt(r) * math.atanh(math.sqrt(r) * eta) for eta in norms.tolist()]
    assert got.tolist() == pytest.approx(closed, rel=1e-5)
    # Deeper (larger norm) levels allow larger margins.
    assert got[0] > got[1] > got[2]


def test_theorem_detaches_norms_and_curvature():
    norms = torch.tensor([0.5, 0.2], requires_grad=True)
    r = torch.tensor(1.0, requires_grad=True)
    schedule = MarginSchedule(shape="theorem", base=1.0)
    assert not level_margins(schedule, 1, epoch=0.0, level_norms=norms, curvature=r).requires_grad


@pytest.mark.parametrize("shape", ["constant", "linear", "geometric", "theorem"])
def test_base_zero_gives_zeros(shape):
    # The theorem shape needs neither norms nor curvature when it is switched off.
    assert values(MarginSchedule(shape=shape, base=0.0), epoch=3.0) == [0.0] * 4


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"shape": "cubic"}, "margins.shape"),
        ({"base": -0.1}, "margins.base"),
        ({"base": float("nan")}, "margins.base"),
        ({"base": True}, "margins.base"),
        ({"ratio": 0.0}, "margins.ratio"),
        ({"ratio": 1.5}, "margins.ratio"),
        ({"kappa": -0.5}, "margins.kappa"),
        ({"kappa": 1.5}, "margins.kappa"),
        ({"warmup_epochs": -1.0}, "margins.warmup_epochs"),
    ],
)
def test_bad_settings_raise(kwargs, field):
    with pytest.raises(UserInputError, match=f"`{field}` must be"):
        MarginSchedule(**kwargs)


def test_bad_call_arguments_raise():
    theorem = MarginSchedule(shape="theorem", base=1.0)
    with pytest.raises(UserInputError, match="`level_norms` must be"):
        level_margins(theorem, 2, epoch=0.0, curvature=1.0)
    with pytest.raises(UserInputError, match="`level_norms` must be"):
        level_margins(theorem, 2, epoch=0.0, level_norms=torch.ones(2) * 0.5, curvature=1.0)
    with pytest.raises(UserInputError, match="`curvature` must be"):
        level_margins(theorem, 1, epoch=0.0, level_norms=torch.tensor([0.5, 0.2]))
    with pytest.raises(UserInputError, match="`depth` must be"):
        level_margins(MarginSchedule(base=1.0), -1, epoch=0.0)
    with pytest.raises(UserInputError, match="`epoch` must be"):
        level_margins(MarginSchedule(base=1.0), 2, epoch=-1.0)


def test_apply_margin_lowers_only_the_target_logit():
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]])
    targets = torch.tensor([2, 0])
    shifted = apply_margin(logits, targets, 0.3, 0.1)
    expected = logits.clone()
    expected[0, 2] -= 3.0
    expected[1, 0] -= 3.0
    torch.testing.assert_close(shifted, expected)
    assert apply_margin(logits, targets, 0.0, 0.1) is logits


def test_apply_margin_in_both_heads_units():
    # Hyperbolic: -d / tau -> -(d + m) / tau at the target.
    distances = torch.tensor([[0.7, 1.2]])
    tau, m = 0.2, 0.3
    hyperbolic = apply_margin(-distances / tau, torch.tensor([0]), m, tau)
    torch.testing.assert_close(hyperbolic, torch.tensor([[-(0.7 + m) / tau, -1.2 / tau]]))
    # Euclidean: scale * cos -> scale * (cos - m), with temperature 1 / scale.
    cosines, scale = torch.tensor([[0.8, 0.1]]), 100.0
    euclidean = apply_margin(scale * cosines, torch.tensor([0]), m, 1 / scale)
    torch.testing.assert_close(euclidean, torch.tensor([[scale * (0.8 - m), scale * 0.1]]))
