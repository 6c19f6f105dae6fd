"""Pure functions on the Poincare ball of curvature ``-r``.

The ball is ``D_r = {x : r |x|^2 < 1}``, of radius ``1/sqrt(r)``, with ``r > 0`` given as a Python
float or a tensor (which may require grad, so the curvature can be learned). With ``s = sqrt(r)``:

* exp map at the origin:  ``exp0(v) = tanh(s|v|) v / (s|v|)``
* log map at the origin:  ``log0(x) = artanh(s|x|) x / (s|x|)``
* Mobius addition:        ``x (+) y = ((1 + 2r<x,y> + r|y|^2) x + (1 - r|x|^2) y)
  / (1 + 2r<x,y> + r^2 |x|^2 |y|^2)``
* distance:               ``d(x, y) = (2/s) artanh(s |(-x) (+) y|)
  = (1/s) arcosh(1 + 2r|x-y|^2 / ((1 - r|x|^2)(1 - r|y|^2)))
  = (2/s) arsinh(s |x-y| / sqrt((1 - r|x|^2)(1 - r|y|^2)))``
* Einstein midpoint: average in the Klein model ``k = 2x / (1 + r|x|^2)`` with Lorentz factors
  ``g = 1/sqrt(1 - r|k|^2) = (1 + r|x|^2) / (1 - r|x|^2)``, then map back with
  ``x = k / (1 + sqrt(1 - r|k|^2))``.

The distance is evaluated in the arsinh form: it needs only ``|x - y|`` (or, for the pairwise
version, one matmul), has no ``arcosh'(1)`` singularity, and stays accurate near the boundary,
where ``|(-x) (+) y|`` rounds to 1. The margin theorem of :func:`max_viable_margin` explains why
prototypes near the boundary allow unbounded logit margins.

All functions disable autocast and compute in float32 (float64 inputs stay float64), so they may
be called inside a mixed-precision forward pass; outputs are float32 for float32, float16 and
bfloat16 inputs. :func:`pairwise_distance` accumulates its squared differences in float64 (see
there why) and still returns float32.
"""

from __future__ import annotations

import contextlib
import math

import torch

from trainables.errors import must

Curvature = float | torch.Tensor

# Floor on squared norms before a square root: sqrt has an infinite slope at 0.
_MIN_SQNORM = 1e-15
# Ceiling on the scaled norm passed to artanh, which diverges at 1 (the ball's boundary).
_MAX_ARTANH = 1.0 - 1e-6
# Floor on conformal factors 1 - r|x|^2, which reach 0 on the boundary.
_MIN_CONFORMAL = 1e-6
# Floor on denominators that vanish only in degenerate cases (boundary points, empty groups).
_MIN_DENOM = 1e-15


def _no_autocast(x: torch.Tensor) -> contextlib.AbstractContextManager:
    """A context that switches autocast off for ``x``'s device type (if it has autocast)."""
    device_type = x.device.type
    if torch.amp.is_autocast_available(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()


def _exact(x: torch.Tensor) -> torch.Tensor:
    """Upcast half precision to float32; float64 stays float64."""
    return x if x.dtype == torch.float64 else x.float()


def _curvature(r: Curvature, like: torch.Tensor) -> torch.Tensor:
    """``r`` as a tensor of ``like``'s dtype and device (keeping its graph if it has one)."""
    if isinstance(r, torch.Tensor):
        return r.to(dtype=like.dtype, device=like.device)
    if not r > 0:
        raise must("r", "> 0", r)
    return torch.tensor(float(r), dtype=like.dtype, device=like.device)


def _sqnorm(x: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean norm over the last dim, kept as a size-1 dim."""
    return (x * x).sum(dim=-1, keepdim=True)


def ball_radius(r: Curvature) -> Curvature:
    """Euclidean radius ``1/sqrt(r)`` of the ball of curvature ``-r``.

    Args:
        r: curvature magnitude (> 0), float or tensor.

    Returns:
        ``1/sqrt(r)``, in (0, inf): a float for a float ``r``, else a tensor.
    """
    if isinstance(r, torch.Tensor):
        return torch.rsqrt(r)
    if not r > 0:
        raise must("r", "> 0", r)
    return 1.0 / math.sqrt(r)


def exp0(v: torch.Tensor, r: Curvature) -> torch.Tensor:
    """Exponential map at the origin: ``tanh(sqrt(r)|v|) v / (sqrt(r)|v|)``.

    Args:
        v: tangent vectors at the origin, shape ``[..., D]``.
        r: curvature magnitude (> 0), float or tensor broadcastable to ``[..., 1]``.

    Returns:
        Points of shape ``[..., D]`` with norm in ``[0, 1/sqrt(r)]``. In float32 ``tanh`` rounds
        to 1 once ``sqrt(r)|v|`` exceeds about 9, which puts the point on the boundary; follow
        with :func:`project` when points must be strictly inside. ``exp0(0) = 0`` with Jacobian
        the identity there (the norm is floored at ``sqrt(1e-15)``, which changes the value by a
        relative ``O(r * 1e-15)`` only).
    """
    with _no_autocast(v):
        v = _exact(v)
        r = _curvature(r, v)
        sqrt_r = r.sqrt()
        # Floor |v|^2: sqrt'(0) is infinite, and the ratio below is 0/0 at v = 0.
        norm = _sqnorm(v).clamp_min(_MIN_SQNORM).sqrt()
        scaled = sqrt_r * norm
        return torch.tanh(scaled) / scaled * v


def log0(x: torch.Tensor, r: Curvature) -> torch.Tensor:
    """Logarithmic map at the origin: ``artanh(sqrt(r)|x|) x / (sqrt(r)|x|)``.

    Args:
        x: points of the ball, shape ``[..., D]``.
        r: curvature magnitude (> 0), float or tensor broadcastable to ``[..., 1]``.

    Returns:
        Tangent vectors of shape ``[..., D]`` with norm in ``[0, artanh(1 - 1e-6)/sqrt(r)]``
        (about ``7.25/sqrt(r)``): ``sqrt(r)|x|`` is capped at ``1 - 1e-6``, so points on or
        beyond the boundary map to finite vectors. ``log0(0) = 0`` with Jacobian the identity.
    """
    with _no_autocast(x):
        x = _exact(x)
        r = _curvature(r, x)
        sqrt_r = r.sqrt()
        # Floor |x|^2: sqrt'(0) is infinite, and the ratio below is 0/0 at x = 0.
        norm = _sqnorm(x).clamp_min(_MIN_SQNORM).sqrt()
        scaled = sqrt_r * norm
        # Cap below 1: artanh diverges on the boundary, which float32 rounding can reach.
        capped = scaled.clamp_max(_MAX_ARTANH)
        return torch.atanh(capped) / scaled * x


def mobius_add(x: torch.Tensor, y: torch.Tensor, r: Curvature) -> torch.Tensor:
    """Mobius addition ``x (+) y`` on the ball.

    ``((1 + 2r<x,y> + r|y|^2) x + (1 - r|x|^2) y) / (1 + 2r<x,y> + r^2 |x|^2 |y|^2)``.
    Not commutative; ``0 (+) y = y``, ``x (+) 0 = x`` and ``(-x) (+) (x (+) y) = y``.

    Args:
        x: points of shape ``[..., D]``.
        y: points of shape ``[..., D]``; leading dims broadcast against ``x``'s.
        r: curvature magnitude (> 0), float or tensor broadcastable to ``[..., 1]``.

    Returns:
        Points of the broadcast shape ``[..., D]``, inside the ball when both inputs are.
    """
    with _no_autocast(x):
        x, y = _exact(x), _exact(y)
        r = _curvature(r, x)
        xy = (x * y).sum(dim=-1, keepdim=True)
        xx, yy = _sqnorm(x), _sqnorm(y)
        numerator = (1 + 2 * r * xy + r * yy) * x + (1 - r * xx) * y
        # Floor: the denominator is >= (1 - r|x||y|)^2 > 0 inside, 0 only for boundary antipodes.
        denominator = (1 + 2 * r * xy + r * r * xx * yy).clamp_min(_MIN_DENOM)
        return numerator / denominator


def _arsinh_distance(sq_diff: torch.Tensor, conformal: torch.Tensor, r: torch.Tensor):
    """``(2/sqrt r) arsinh(sqrt(r |x-y|^2 / conformal))`` from precomputed pieces."""
    ratio = r * sq_diff / conformal
    # Floor the ratio: sqrt'(0) is infinite, which would give NaN gradients at x = y.
    return 2 * torch.asinh(ratio.clamp_min(_MIN_SQNORM).sqrt()) / r.sqrt()


def distance(x: torch.Tensor, y: torch.Tensor, r: Curvature) -> torch.Tensor:
    """Geodesic distance between paired points, ``d(x, y) = (2/sqrt r) artanh(sqrt r |(-x)(+)y|)``.

    Evaluated as the equal ``(2/sqrt r) arsinh(sqrt(r |x-y|^2 / ((1-r|x|^2)(1-r|y|^2))))``
    (Ganea et al. 2018), which stays accurate near the boundary.

    Args:
        x: points of shape ``[..., D]`` (last dim is the feature dim).
        y: points of shape ``[..., D]``; leading dims broadcast against ``x``'s.
        r: curvature magnitude (> 0), float or tensor broadcastable to ``[..., 1]``.

    Returns:
        Distances of the broadcast leading shape ``[...]``, in ``[0, inf)``. ``d(x, x)`` is
        ``2 sqrt(1e-15) / sqrt(r)`` (about ``6e-8/sqrt(r)``), with gradient 0. Conformal factors
        ``1 - r|x|^2`` are floored at ``1e-6``, which caps distances from points on or beyond the
        boundary instead of returning inf or NaN.
    """
    with _no_autocast(x):
        x, y = _exact(x), _exact(y)
        r = _curvature(r, x)
        sq_diff = _sqnorm(x - y)
        # Floor: 1 - r|x|^2 is 0 on the boundary and negative beyond it (unprojected points).
        conformal_x = (1 - r * _sqnorm(x)).clamp_min(_MIN_CONFORMAL)
        conformal_y = (1 - r * _sqnorm(y)).clamp_min(_MIN_CONFORMAL)
        return _arsinh_distance(sq_diff, conformal_x * conformal_y, r).squeeze(-1)


def pairwise_distance(x: torch.Tensor, y: torch.Tensor, r: Curvature) -> torch.Tensor:
    """All distances between two sets of points, ``[B, D] x [N, D] -> [B, N]``.

    ``d = (1/sqrt r) arcosh(1 + 2r|x-y|^2 / ((1-r|x|^2)(1-r|y|^2)))``, evaluated in the
    equivalent arsinh form (``arcosh(1 + 2z^2) = 2 arsinh(z)``), which has no ``arcosh'(1)``
    singularity. ``|x-y|^2 = |x|^2 + |y|^2 - 2<x,y>`` takes one ``[B, D] @ [D, N]`` matmul, so no
    ``[B, N, D]`` tensor is built.

    That expansion cancels for nearly equal points, and near the boundary the conformal factors
    amplify the error: in float32, points at 0.999 of the radius that are 0.2 apart in distance
    come out with errors of about 1. So the squared differences (norms and matmul, ``O(BND)``)
    are accumulated in float64 and the ``[B, N]`` result is returned in float32; on devices
    without float64 (MPS) it stays float32, with that error.

    Args:
        x: points of shape ``[B, D]``.
        y: points of shape ``[N, D]``.
        r: curvature magnitude (> 0), a float or a one-element tensor.

    Returns:
        Distances of shape ``[B, N]`` (float32, or float64 for float64 inputs), in ``[0, inf)``,
        with finite gradients everywhere, including at ``x_i == y_j`` (see :func:`distance` for
        the floors).
    """
    with _no_autocast(x):
        x, y = _exact(x), _exact(y)
        out_dtype = x.dtype
        if x.device.type != "mps":
            x, y = x.double(), y.double()
        r = _curvature(r, x).reshape(())
        xx = (x * x).sum(dim=-1)
        yy = (y * y).sum(dim=-1)
        # Floor at 0: the expanded square can round slightly negative for nearly equal points.
        sq_diff = (xx[:, None] + yy[None, :] - 2 * (x @ y.T)).clamp_min(0)
        # Floor: 1 - r|x|^2 is 0 on the boundary and negative beyond it (unprojected points).
        conformal_x = (1 - r * xx).clamp_min(_MIN_CONFORMAL)
        conformal_y = (1 - r * yy).clamp_min(_MIN_CONFORMAL)
        conformal = conformal_x[:, None] * conformal_y[None, :]
        return _arsinh_distance(sq_diff, conformal, r).to(out_dtype)


def project(x: torch.Tensor, r: Curvature, eps: float = 1e-3) -> torch.Tensor:
    """Pull points back inside the ball: clip norms to ``(1 - eps)/sqrt(r)``.

    Args:
        x: points of shape ``[..., D]``.
        r: curvature magnitude (> 0), float or tensor broadcastable to ``[..., 1]``.
        eps: relative margin from the boundary, in (0, 1).

    Returns:
        Points of shape ``[..., D]`` with norm in ``[0, (1 - eps)/sqrt(r)]``. Points already
        within that radius are returned unchanged (bit for bit, after the float32 upcast);
        the others are rescaled along their direction.
    """
    with _no_autocast(x):
        x = _exact(x)
        r = _curvature(r, x)
        max_norm = (1 - eps) / r.sqrt()
        # Floor |x|^2: sqrt'(0) is infinite (the rescaled branch is still evaluated at x = 0).
        norm = _sqnorm(x).clamp_min(_MIN_SQNORM).sqrt()
        return torch.where(norm > max_norm, x * (max_norm / norm), x)


def einstein_midpoint(
    x: torch.Tensor,
    groups: torch.Tensor,
    num_groups: int,
    r: Curvature,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Weighted Einstein midpoint of each group of points.

    In the Klein model ``k = 2x / (1 + r|x|^2)`` with Lorentz factor ``g = 1/sqrt(1 - r|k|^2)``,
    the midpoint is ``m = sum(w g k) / sum(w g)`` over each group; it maps back to the ball as
    ``m / (1 + sqrt(1 - r|m|^2))``. It equals the Mobius gyromidpoint (Ungar), is permutation
    invariant, and maps copies of one point to that point.

    Evaluated without cancellation: with ``c = 1 - r|x|^2``, ``g k = 2x / c`` and
    ``g = (1 + r|x|^2) / c``, so ``N = sum(w g k)`` and ``G = sum(w g)`` need no ``1 - r|k|^2``;
    and ``G^2 (1 - r|m|^2) = W^2 + 4 r U V`` (the Lorentz norm of the weighted sum of hyperboloid
    points), where ``W = sum(w)``, ``U = sum(w/c)`` and ``V = sum((w/c) |x - xbar|^2)`` about the
    ``w/c``-weighted mean ``xbar``. The result is ``N / (G + sqrt(W^2 + 4 r U V))``: a sum of
    positive terms, where the textbook form loses half its digits for points near the boundary.
    Weights are normalised to sum 1 in each group first, so their scale does not matter.

    Args:
        x: points of the ball, shape ``[B, D]``.
        groups: LongTensor ``[B]``, the group of each point, values in ``[0, num_groups)``.
        num_groups: number of groups ``G``.
        r: curvature magnitude (> 0), a float or a one-element tensor.
        weights: non-negative weights ``[B]``; default all ones.

    Returns:
        Midpoints of shape ``[G, D]``, inside the ball. Groups with no points (or only zero
        weights) get the origin. Conformal factors ``1 - r|x|^2`` are floored at ``1e-6``.
    """
    with _no_autocast(x):
        x = _exact(x)
        r = _curvature(r, x).reshape(())

        def group_sum(values: torch.Tensor) -> torch.Tensor:
            return values.new_zeros((num_groups, *values.shape[1:])).index_add(0, groups, values)

        weights = torch.ones_like(x[:, 0]) if weights is None else _exact(weights).to(x.dtype)
        # Floor: a group whose weights are all zero sums to 0; its points then get weight 0.
        weights = weights / group_sum(weights).clamp_min(_MIN_DENOM)[groups]
        sq = (x * x).sum(dim=-1)
        # Floor: 1 - r|x|^2 is 0 on the boundary, where the Lorentz factor is infinite.
        conformal = (1 - r * sq).clamp_min(_MIN_CONFORMAL)
        u = weights / conformal
        total_w, total_u, total_g = group_sum(torch.stack([weights, u, u * (1 + r * sq)], 1)).T
        numerator = group_sum(2 * u[:, None] * x)
        # Floor: empty groups have U = 0 (and a zero numerator, so their mean is the origin).
        mean = numerator / (2 * total_u.clamp_min(_MIN_DENOM))[:, None]
        spread = group_sum(u * (x - mean[groups]).square().sum(dim=-1))
        lorentz_sq = total_w.square() + 4 * r * total_u * spread
        # Floor: the Lorentz norm is >= 1 for non-empty groups but 0 for empty ones (sqrt'(0)).
        lorentz = lorentz_sq.clamp_min(_MIN_SQNORM).sqrt()
        return numerator / (total_g + lorentz)[:, None]


def max_viable_margin(
    eta: float | torch.Tensor,
    r: Curvature,
    angle: float | torch.Tensor = math.pi,
) -> float | torch.Tensor:
    """Largest logit margin a hyperbolic distance classifier allows (the margin theorem).

    Take logits ``-d_r(x, p_c)`` with class prototypes ``p_c`` at norm ``eta``. For true class
    ``y`` and any other class ``j``, the triangle inequality gives
    ``d_r(x, p_j) - d_r(x, p_y) <= d_r(p_y, p_j)``, with equality at ``x = p_y``; so the best
    achievable margin is exactly the prototype distance. For two prototypes at norm ``eta``
    separated by ``angle``, ``|p_y - p_j|^2 = 2 eta^2 (1 - cos angle)`` and

        ``d = (1/sqrt r) arcosh(1 + 4 r eta^2 (1 - cos angle) / (1 - r eta^2)^2)``,

    which for ``angle = pi`` is ``(4/sqrt r) artanh(sqrt(r) eta)``: it grows without bound as
    ``eta -> 1/sqrt(r)``. A cosine classifier on the unit sphere caps the same margin at 2
    (times its logit scale). Computed as ``(2/sqrt r) arsinh(2 sqrt(r) eta |sin(angle/2)| /
    (1 - r eta^2))``, the same value without the cancellation in ``arcosh`` near 1.

    References: Dong et al., "Hierarchically Robust Zero-shot Vision-language Models", CVPR 2026
    (arXiv 2604.18867), margin theorem; Ganea, Becigneul and Hofmann, "Hyperbolic Entailment
    Cones" (ICML 2018) and "Hyperbolic Neural Networks" (NeurIPS 2018), Poincare distance.

    Args:
        eta: prototype norm(s), in ``[0, 1/sqrt(r))``; float or tensor (elementwise).
        r: curvature magnitude, > 0; float or tensor (broadcasts against ``eta``).
        angle: angle between the two prototypes, in radians; float or tensor.

    Returns:
        The margin, in ``[0, inf)``: a tensor if any argument is a tensor, else a float.

    Raises:
        UserInputError: if ``r <= 0`` or ``eta`` lies outside ``[0, 1/sqrt(r))``.
    """
    if not any(isinstance(a, torch.Tensor) for a in (eta, r, angle)):
        if not r > 0:
            raise must("r", "> 0", r)
        if not (0 <= eta and r * eta * eta < 1):
            raise must("eta", "in [0, 1/sqrt(r))", eta)
        chord = 2 * math.sqrt(r) * eta * abs(math.sin(angle / 2))
        return 2 * math.asinh(chord / (1 - r * eta * eta)) / math.sqrt(r)

    like = next(a for a in (eta, r, angle) if isinstance(a, torch.Tensor))
    with _no_autocast(like):
        dtype = torch.float64 if like.dtype == torch.float64 else torch.float32
        eta_t, r_t, angle_t = (
            torch.as_tensor(a, device=like.device).to(dtype) for a in (eta, r, angle)
        )
        bad_r = ~(r_t > 0)
        if bool(bad_r.any()):
            raise must("r", "> 0", _first(r_t, bad_r))
        # Compare r eta^2 with 1 rather than eta with 1/sqrt(r): it is the denominator below.
        bad_eta = ~((eta_t >= 0) & (r_t * eta_t * eta_t < 1))
        if bool(bad_eta.any()):
            raise must("eta", "in [0, 1/sqrt(r))", _first(eta_t, bad_eta))
        sqrt_r = r_t.sqrt()
        chord = 2 * sqrt_r * eta_t * torch.sin(angle_t / 2).abs()
        return 2 * torch.asinh(chord / (1 - r_t * eta_t * eta_t)) / sqrt_r


def _first(values: torch.Tensor, mask: torch.Tensor) -> float:
    """The first entry of ``values`` (broadcast to ``mask``) where ``mask`` holds."""
    return torch.broadcast_to(values, mask.shape)[mask][0].item()
