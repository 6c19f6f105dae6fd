from __future__ import annotations

import math

import geoopt
import pytest
import torch

from trainables.errors import UserInputError
from trainables.geometry import (
    ball_radius,
    distance,
    einstein_midpoint,
    exp0,
    log0,
    max_viable_margin,
    mobius_add,
    pairwise_distance,
    project,
)

CURVATURES = [0.1, 1.0, 2.5]


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _points(n: int, dim: int, r: float, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    """Points spread over the ball: random directions, norms uniform in [0, 0.95) of the radius."""
    generator = _generator(seed)
    direction = torch.randn(n, dim, generator=generator, dtype=torch.float64)
    direction = direction / direction.norm(dim=-1, keepdim=True)
    radius = 0.95 * torch.rand(n, 1, generator=generator, dtype=torch.float64) / math.sqrt(r)
    return (direction * radius).to(dtype)


def _boundary_points(n: int, dim: int, r: float, seed: int = 0) -> torch.Tensor:
    """Points at norm (1 - 1e-3)/sqrt(r), the default projection radius."""
    direction = torch.randn(n, dim, generator=_generator(seed))
    return direction / direction.norm(dim=-1, keepdim=True) * (1 - 1e-3) / math.sqrt(r)


def _geoopt_ball(r: float) -> geoopt.PoincareBall:
    """geoopt's ball with c = r; its dist is 2 artan_k(|(-x) (+) y|) = (2/sqrt c) artanh(...).

    geoopt stores c as softplus(inverse_softplus(c)); a float64 tensor keeps that round trip
    exact to ~1e-16 (a Python float would go through float32).
    """
    return geoopt.PoincareBall(c=torch.tensor(r, dtype=torch.float64))


# --- exp0 / log0 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("r", CURVATURES)
def test_exp0_log0_round_trip_from_the_tangent_space(r):
    generator = _generator(1)
    scales = torch.tensor([1e-12, 1e-6, 0.1, 1.0, 3.0]) / math.sqrt(r)
    v = torch.randn(5, 8, generator=generator)
    v = v / v.norm(dim=-1, keepdim=True) * scales[:, None]
    back = log0(exp0(v, r), r)
    torch.testing.assert_close(back, v, rtol=1e-4, atol=1e-12)
    zero = torch.zeros(3, 8)
    assert torch.equal(exp0(zero, r), zero) and torch.equal(log0(zero, r), zero)


@pytest.mark.parametrize("r", CURVATURES)
def test_exp0_log0_round_trip_from_the_ball(r):
    x = torch.cat([_points(32, 6, r), _boundary_points(4, 6, r), 1e-9 * torch.ones(1, 6)])
    x = project(x, r)
    torch.testing.assert_close(exp0(log0(x, r), r), x, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("r", CURVATURES)
def test_exp0_lands_in_the_ball_and_log0_is_finite_beyond_it(r):
    v = 100 * torch.randn(16, 4, generator=_generator(2))
    assert (exp0(v, r).norm(dim=-1) <= 1 / math.sqrt(r) * (1 + 1e-6)).all()
    outside = 2 * _boundary_points(4, 4, r)
    assert torch.isfinite(log0(outside, r)).all()


# --- distance --------------------------------------------------------------------------------


@pytest.mark.parametrize("r", CURVATURES)
def test_distance_is_a_metric(r):
    x, y, z = (_points(64, 5, r, seed=s) for s in (3, 4, 5))
    d_xy, d_yx = distance(x, y, r), distance(y, x, r)
    assert d_xy.shape == (64,)
    torch.testing.assert_close(d_xy, d_yx, rtol=1e-5, atol=1e-6)
    assert (d_xy > 0).all()
    assert (distance(x, x, r) < 1e-6).all()
    assert (distance(x, z, r) <= d_xy + distance(y, z, r) + 1e-5).all()


@pytest.mark.parametrize("r", CURVATURES)
def test_distance_from_the_origin(r):
    x = torch.cat([_points(32, 5, r), _boundary_points(4, 5, r)])
    expected = 2 / math.sqrt(r) * torch.atanh(math.sqrt(r) * x.double().norm(dim=-1))
    torch.testing.assert_close(distance(torch.zeros(5), x, r).double(), expected, rtol=1e-5, atol=0)


def test_distance_broadcasts_leading_dims():
    x = _points(3, 4, 1.0).reshape(3, 1, 4)
    y = _points(5, 4, 1.0, seed=1)
    assert distance(x, y, 1.0).shape == (3, 5)
    torch.testing.assert_close(distance(x, y, 1.0), pairwise_distance(x[:, 0], y, 1.0))


@pytest.mark.parametrize("r", CURVATURES)
def test_pairwise_distance_matches_distance_in_values_and_gradients(r):
    x = _points(7, 6, r, seed=6).requires_grad_()
    y = torch.cat([_points(4, 6, r, seed=7), _boundary_points(2, 6, r, seed=8)]).requires_grad_()
    weights = torch.rand(7, 6, generator=_generator(9))

    pairwise = pairwise_distance(x, y, r)
    paired = distance(x[:, None, :], y[None, :, :], r)
    assert pairwise.shape == (7, 6)
    torch.testing.assert_close(pairwise, paired, rtol=1e-5, atol=1e-6)

    grads_pairwise = torch.autograd.grad((pairwise * weights).sum(), (x, y))
    grads_paired = torch.autograd.grad((paired * weights).sum(), (x, y))
    for got, expected in zip(grads_pairwise, grads_paired, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("r", CURVATURES)
def test_pairwise_distance_is_accurate_for_close_points_near_the_boundary(r):
    # The expanded square |x|^2 + |y|^2 - 2<x,y> cancels here, and 1/(1 - r|x|^2) amplifies it.
    p = _boundary_points(16, 256, r, seed=32)
    x = project(p + 1e-5 / math.sqrt(r) * torch.randn(16, 256, generator=_generator(33)), r)
    expected = distance(x.double(), p.double(), r)
    got = pairwise_distance(x, p, r).diagonal()
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=0)


def test_pairwise_distance_with_a_learned_curvature():
    r = torch.tensor(0.7, requires_grad=True)
    x, y = _points(5, 3, 0.7), _points(4, 3, 0.7, seed=1)
    d = pairwise_distance(x, y, r)
    (grad,) = torch.autograd.grad(d.sum(), r)
    r64 = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    d64 = distance(x.double()[:, None], y.double()[None], r64)
    (grad64,) = torch.autograd.grad(d64.sum(), r64)
    torch.testing.assert_close(grad.double(), grad64, rtol=1e-4, atol=1e-5)


# --- mobius_add / project --------------------------------------------------------------------


@pytest.mark.parametrize("r", CURVATURES)
def test_mobius_add_identity_and_left_cancellation(r):
    x, y = _points(32, 5, r, seed=10), _points(32, 5, r, seed=11)
    torch.testing.assert_close(mobius_add(torch.zeros(5), x, r), x)
    torch.testing.assert_close(mobius_add(x, torch.zeros(5), r), x)
    torch.testing.assert_close(mobius_add(-x, mobius_add(x, y, r), r), y, rtol=1e-4, atol=1e-5)
    assert mobius_add(x[:, None], y[None], r).shape == (32, 32, 5)


@pytest.mark.parametrize("r", CURVATURES)
def test_project_clips_to_the_ball_and_keeps_interior_points(r):
    generator = _generator(12)
    outside = torch.randn(16, 4, generator=generator) * 10 / math.sqrt(r)
    projected = project(outside, r)
    norms = projected.norm(dim=-1)
    assert (norms < 1 / math.sqrt(r)).all()
    torch.testing.assert_close(norms, torch.full((16,), (1 - 1e-3) / math.sqrt(r)))
    direction = outside / outside.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(projected / norms[:, None], direction)

    inside = torch.cat([_points(16, 4, r), torch.zeros(1, 4)])
    assert torch.equal(project(inside, r), inside)
    assert (project(outside, r, eps=0.1).norm(dim=-1) <= 0.9 / math.sqrt(r) * (1 + 1e-6)).all()


def test_ball_radius():
    assert ball_radius(4.0) == 0.5
    torch.testing.assert_close(ball_radius(torch.tensor(0.25)), torch.tensor(2.0))
    with pytest.raises(UserInputError, match="^`r` must be"):
        ball_radius(0.0)


# --- einstein_midpoint -----------------------------------------------------------------------


@pytest.mark.parametrize("r", CURVATURES)
def test_midpoint_of_identical_points_is_that_point(r):
    point = torch.cat([_points(2, 4, r, seed=13), _boundary_points(1, 4, r)])
    x = point.repeat_interleave(3, dim=0)
    groups = torch.arange(3).repeat_interleave(3)
    torch.testing.assert_close(einstein_midpoint(x, groups, 3, r), point, rtol=1e-5, atol=1e-6)


def test_midpoint_weights_groups_and_order():
    r = 1.0
    x = _points(10, 4, r, seed=14)
    groups = torch.tensor([0, 0, 0, 2, 2, 2, 2, 3, 3, 3])
    weights = torch.rand(10, generator=_generator(15))
    weights[1] = 0.0
    midpoints = einstein_midpoint(x, groups, 5, r, weights)
    assert midpoints.shape == (5, 4) and midpoints.dtype == torch.float32

    # A zero weight ignores its point; a single point is its own midpoint; empty groups are 0.
    keep = torch.tensor([0, 2])
    torch.testing.assert_close(
        einstein_midpoint(x[keep], groups[keep], 5, r, weights[keep])[0], midpoints[0]
    )
    torch.testing.assert_close(einstein_midpoint(x[:1], groups[:1], 5, r)[0], x[0])
    assert torch.equal(midpoints[1], torch.zeros(4)) and torch.equal(midpoints[4], torch.zeros(4))
    assert (midpoints.norm(dim=-1) < 1 / math.sqrt(r)).all()

    permutation = torch.randperm(10, generator=_generator(16))
    shuffled = einstein_midpoint(x[permutation], groups[permutation], 5, r, weights[permutation])
    torch.testing.assert_close(shuffled, midpoints)


def test_midpoint_lies_in_the_ball_even_for_boundary_points():
    r = 2.5
    x = _boundary_points(64, 3, r, seed=17)
    groups = torch.randint(0, 4, (64,), generator=_generator(18))
    midpoints = einstein_midpoint(x, groups, 4, r)
    assert (midpoints.norm(dim=-1) < 1 / math.sqrt(r)).all()


def test_midpoint_gradients_with_a_learned_curvature():
    r = torch.tensor(1.3, requires_grad=True)
    x = torch.cat([_points(6, 4, 1.3), _boundary_points(2, 4, 1.3)]).requires_grad_()
    weights = torch.rand(8, generator=_generator(19)).requires_grad_()
    groups = torch.tensor([0, 0, 1, 1, 1, 3, 3, 0])
    midpoints = einstein_midpoint(x, groups, 4, r, weights)
    grads = torch.autograd.grad(midpoints.square().sum(), (x, r, weights))
    assert all(torch.isfinite(g).all() for g in grads)
    assert grads[1].abs() > 0


# --- numerical safety ------------------------------------------------------------------------


def _finite_grads(output: torch.Tensor, *inputs: torch.Tensor) -> bool:
    grads = torch.autograd.grad(output.sum(), inputs)
    return all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("r", CURVATURES)
def test_gradients_are_finite_at_the_origin(r):
    x = torch.cat([torch.zeros(1, 4), 1e-20 * torch.ones(1, 4), 1e-7 * torch.ones(1, 4)])
    x.requires_grad_()
    curvature = torch.tensor(r, requires_grad=True)
    assert _finite_grads(exp0(x, curvature), x, curvature)
    assert _finite_grads(log0(x, curvature), x, curvature)
    assert _finite_grads(project(x, curvature), x)
    assert _finite_grads(mobius_add(x, x, curvature), x, curvature)
    assert _finite_grads(distance(x, x.detach(), curvature), x, curvature)
    assert _finite_grads(pairwise_distance(x, x, curvature), x, curvature)
    assert _finite_grads(einstein_midpoint(x, torch.zeros(3, dtype=torch.long), 1, r), x)
    # The Jacobian of exp0 and log0 at the origin is the identity.
    for fn in (exp0, log0):
        (grad,) = torch.autograd.grad(fn(x, r)[0, 1], x)
        assert torch.equal(grad[0], torch.tensor([0.0, 1.0, 0.0, 0.0]))


@pytest.mark.parametrize("r", CURVATURES)
def test_gradients_are_finite_near_the_boundary(r):
    x = _boundary_points(8, 4, r, seed=20).requires_grad_()
    y = _boundary_points(8, 4, r, seed=21).requires_grad_()
    curvature = torch.tensor(r, requires_grad=True)
    assert _finite_grads(log0(x, curvature), x, curvature)
    assert _finite_grads(exp0(log0(x, r), curvature), x, curvature)
    assert _finite_grads(project(x * 1.01, curvature), x, curvature)
    assert _finite_grads(mobius_add(-x, y, curvature), x, y, curvature)
    assert _finite_grads(distance(x, y, curvature), x, y, curvature)
    assert _finite_grads(distance(x, -x, curvature), x, curvature)
    assert _finite_grads(pairwise_distance(x, y, curvature), x, y, curvature)
    assert _finite_grads(pairwise_distance(x, x, curvature), x, curvature)
    groups = torch.tensor([0, 0, 1, 1, 1, 2, 2, 2])
    assert _finite_grads(einstein_midpoint(x, groups, 3, curvature), x, curvature)


def test_outputs_are_float32_under_autocast():
    r = 1.0
    x = _points(6, 4, r).bfloat16()
    y = _points(5, 4, r, seed=1).bfloat16()
    groups = torch.tensor([0, 1, 1, 0, 2, 2])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = [
            exp0(x, r),
            log0(x, r),
            mobius_add(x, x, r),
            distance(x, x.flip(0), r),
            pairwise_distance(x, y, r),
            project(x, r),
            einstein_midpoint(x, groups, 3, r, torch.ones(6, dtype=torch.bfloat16)),
            max_viable_margin(torch.tensor(0.5, dtype=torch.bfloat16), r),
        ]
    assert all(out.dtype == torch.float32 for out in outputs)
    expected = pairwise_distance(x.float(), y.float(), r)
    torch.testing.assert_close(outputs[4], expected)


def test_float64_inputs_keep_float64():
    x = _points(3, 4, 1.0, dtype=torch.float64)
    assert distance(x, x.flip(0), 1.0).dtype == torch.float64
    assert pairwise_distance(x, x, 1.0).dtype == torch.float64


# --- agreement with geoopt -------------------------------------------------------------------


@pytest.mark.parametrize("r", CURVATURES)
def test_agrees_with_geoopt_in_values_and_gradients(r):
    ball = _geoopt_ball(r)
    x = torch.cat([_points(16, 5, r, seed=22), _boundary_points(2, 5, r, seed=23).double()])
    x = x.double().requires_grad_()
    y = _points(18, 5, r, seed=24, dtype=torch.float64).requires_grad_()
    v = (torch.randn(18, 5, generator=_generator(25), dtype=torch.float64)).requires_grad_()

    cases = [
        (exp0(v, r), ball.expmap0(v)),
        (log0(x, r), ball.logmap0(x)),
        (mobius_add(x, y, r), ball.mobius_add(x, y)),
        (distance(x, y, r), ball.dist(x, y)),
        (pairwise_distance(x, y, r), ball.dist(x[:, None], y[None])),
    ]
    for ours, theirs in cases:
        torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-9)
        w = torch.rand(ours.shape, generator=_generator(26), dtype=torch.float64)
        grads = torch.autograd.grad((ours * w).sum(), (x, y, v), allow_unused=True)
        expected = torch.autograd.grad((theirs * w).sum(), (x, y, v), allow_unused=True)
        for got, want in zip(grads, expected, strict=True):
            assert (got is None) == (want is None)
            if got is not None:
                torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("r", CURVATURES)
def test_midpoint_agrees_with_geoopt_gyromidpoint(r):
    ball = _geoopt_ball(r)
    x = _points(9, 4, r, seed=27, dtype=torch.float64)
    weights = torch.rand(9, generator=_generator(28), dtype=torch.float64)
    ours = einstein_midpoint(x, torch.zeros(9, dtype=torch.long), 1, r, weights)[0]
    torch.testing.assert_close(ours, ball.weighted_midpoint(x, weights), rtol=1e-9, atol=1e-9)


def test_curvature_gradient_agrees_with_geoopt():
    from geoopt.manifolds.stereographic import math as stereographic

    x = _points(6, 3, 0.4, seed=29, dtype=torch.float64)
    y = _points(6, 3, 0.4, seed=30, dtype=torch.float64)
    r = torch.tensor(0.4, dtype=torch.float64, requires_grad=True)
    (ours,) = torch.autograd.grad(distance(x, y, r).sum() + log0(x, r).sum(), r)
    k = -r
    theirs_total = stereographic.dist(x, y, k=k).sum() + stereographic.logmap0(x, k=k).sum()
    (theirs,) = torch.autograd.grad(theirs_total, r)
    torch.testing.assert_close(ours, theirs, rtol=1e-7, atol=1e-9)


# --- max_viable_margin -----------------------------------------------------------------------


@pytest.mark.parametrize("r", CURVATURES)
def test_margin_is_the_distance_between_opposite_prototypes(r):
    direction = torch.randn(4, generator=_generator(31), dtype=torch.float64)
    direction = direction / direction.norm()
    for fraction in (0.0, 0.3, 0.9, 0.999):
        eta = fraction / math.sqrt(r)
        p = eta * direction
        margin = max_viable_margin(eta, r)
        assert isinstance(margin, float)
        # distance(x, x) is floored at 2e-7 for r = 0.1, hence the absolute tolerance.
        assert margin == pytest.approx(distance(p, -p, r).item(), rel=1e-9, abs=1e-6)
        assert margin == pytest.approx(4 / math.sqrt(r) * math.atanh(math.sqrt(r) * eta))

    # At a right angle the prototypes are closer, so the margin is smaller.
    other = torch.tensor([0.0, 1.0], dtype=torch.float64)
    p = 0.7 / math.sqrt(r) * torch.tensor([1.0, 0.0], dtype=torch.float64)
    quarter = max_viable_margin(0.7 / math.sqrt(r), r, angle=math.pi / 2)
    assert quarter == pytest.approx(distance(p, 0.7 / math.sqrt(r) * other, r).item(), rel=1e-9)
    assert quarter < max_viable_margin(0.7 / math.sqrt(r), r)


def test_margin_grows_without_bound_towards_the_boundary():
    r = 2.5
    eta = torch.linspace(0, 1 - 1e-6, 200, dtype=torch.float64) / math.sqrt(r)
    margins = max_viable_margin(eta, r)
    assert isinstance(margins, torch.Tensor) and margins.shape == (200,)
    assert (margins.diff() > 0).all()
    # Each tenfold step towards the boundary adds about (2/sqrt r) ln 10: no upper bound.
    steps = [max_viable_margin((1 - 10.0**-k) / math.sqrt(r), r) for k in range(1, 13)]
    increments = torch.tensor(steps, dtype=torch.float64).diff()
    expected = torch.full((9,), 2 * math.log(10) / math.sqrt(r), dtype=torch.float64)
    torch.testing.assert_close(increments[2:], expected, rtol=1e-3, atol=0)
    assert steps[-1] > 30
    # A cosine classifier's margin is capped at 2; the hyperbolic one passes it well inside.
    assert max_viable_margin(0.5 / math.sqrt(r), r) < 2 < max_viable_margin(0.7 / math.sqrt(r), r)


def test_margin_accepts_tensors_and_passes_gradients():
    r = torch.tensor(1.0, requires_grad=True)
    eta = torch.tensor([0.2, 0.5], requires_grad=True)
    margins = max_viable_margin(eta, r)
    torch.testing.assert_close(margins, 4 * torch.atanh(eta.detach()))
    grads = torch.autograd.grad(margins.sum(), (eta, r))
    assert all(torch.isfinite(g).all() for g in grads)
    assert isinstance(max_viable_margin(0.5, torch.tensor(1.0)), torch.Tensor)


@pytest.mark.parametrize(
    "eta, r",
    [(-0.1, 1.0), (1.0, 1.0), (0.8, 2.0), (float("nan"), 1.0), (torch.tensor([0.1, 1.2]), 1.0)],
)
def test_margin_rejects_eta_outside_the_ball(eta, r):
    with pytest.raises(UserInputError, match="^`eta` must be in"):
        max_viable_margin(eta, r)


@pytest.mark.parametrize("r", [0.0, -1.0, torch.tensor(-1.0)])
def test_margin_rejects_non_positive_curvature(r):
    with pytest.raises(UserInputError, match="^`r` must be > 0"):
        max_viable_margin(0.1, r)
