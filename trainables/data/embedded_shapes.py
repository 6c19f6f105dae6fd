"""The embedded shapes as antialiased masks: one drawing per shape over unit coordinates (u
right, v up) that fit the unit disk, placed, rotated and area-averaged by :func:`draw_masks`."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from trainables.data.embedded_taxonomy import ALL_SHAPES

#: Supersampling factor of the shape masks (drawn at 2x, area-averaged down).
SUPERSAMPLE = 2

Mask = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def _inside_polygon(
    u: np.ndarray, v: np.ndarray, points: Sequence[tuple[float, float]]
) -> np.ndarray:
    """Even-odd rule: True where ``(u, v)`` lies inside the closed polygon ``points``."""
    inside = np.zeros(np.broadcast_shapes(u.shape, v.shape), dtype=bool)
    for (x1, y1), (x2, y2) in zip(points, (*points[1:], points[0]), strict=True):
        if y1 == y2:
            continue  # a horizontal edge never crosses a horizontal ray
        crosses = (y1 > v) != (y2 > v)
        x_at_v = x1 + (v - y1) * ((x2 - x1) / (y2 - y1))
        inside ^= crosses & (u < x_at_v)
    return inside


def _regular(n: int, radius: float, start_deg: float) -> list[tuple[float, float]]:
    return [
        (
            radius * math.cos(math.radians(start_deg + 360.0 * i / n)),
            radius * math.sin(math.radians(start_deg + 360.0 * i / n)),
        )
        for i in range(n)
    ]


def _star(points: int, outer: float, inner: float) -> list[tuple[float, float]]:
    corners = []
    for i in range(2 * points):
        radius = outer if i % 2 == 0 else inner
        angle = math.radians(90.0 + 180.0 * i / points)
        corners.append((radius * math.cos(angle), radius * math.sin(angle)))
    return corners


def _polygon(points: Sequence[tuple[float, float]]) -> Mask:
    return lambda u, v, t: _inside_polygon(u, v, points)


def _circle(u, v, t):
    return u * u + v * v <= 0.92**2


def _ellipse(u, v, t):
    minor = 0.42 + 0.12 * t  # 0.42-0.54 of the major axis: always clearly elongated
    return u * u + (v / minor) ** 2 <= 1.0


def _ring(u, v, t):
    r2 = u * u + v * v
    inner = 0.5 + 0.1 * t
    return (r2 <= 0.95**2) & (r2 >= inner * inner)


def _semicircle(u, v, t):
    # A half disk, flat side down, centred on its bounding box; its corners touch radius 1.
    return (u * u + (v + 0.445) ** 2 <= 0.89**2) & (v >= -0.445)


def _crescent(u, v, t):
    shift = 0.38 + 0.12 * t
    return (u * u + v * v <= 0.95**2) & ((u - shift) ** 2 + v * v > 0.82**2)


def _heart(u, v, t):
    # The quartic heart (x^2 + y^2 - 1)^3 <= x^2 y^3, spanning about x in [-1.14, 1.14].
    x = u * 1.34
    y = v * 1.34 + 0.12
    s = x * x + y * y - 1.0
    return s * s * s <= x * x * y * y * y


_TEAR_CENTRE, _TEAR_RADIUS, _TEAR_TIP = -0.3, 0.65, 1.0


def _teardrop_body() -> list[tuple[float, float]]:
    # Triangle from the tip to the two points where the tip's tangents touch the round body.
    d = _TEAR_TIP - _TEAR_CENTRE
    cos_a = _TEAR_RADIUS / d
    sin_a = math.sqrt(1.0 - cos_a * cos_a)
    y = _TEAR_CENTRE + _TEAR_RADIUS * cos_a
    x = _TEAR_RADIUS * sin_a
    return [(0.0, _TEAR_TIP), (-x, y), (x, y)]


_TEAR_BODY = _teardrop_body()


def _teardrop(u, v, t):
    body = u * u + (v - _TEAR_CENTRE) ** 2 <= _TEAR_RADIUS**2
    return body | _inside_polygon(u, v, _TEAR_BODY)


def _square(u, v, t):
    return (np.abs(u) <= 0.7) & (np.abs(v) <= 0.7)


def _rectangle(u, v, t):
    half_height = 0.36 + 0.08 * t  # aspect 2.0-2.4
    return (np.abs(u) <= 0.88) & (np.abs(v) <= half_height)


def _diamond(u, v, t):
    # A tall rhombus (width 0.55 of its height): never mistaken for a rotated square.
    return np.abs(u) / 0.55 + np.abs(v) / 1.0 <= 1.0


def _cross(u, v, t):
    au, av = np.abs(u), np.abs(v)
    return ((au <= 0.3) & (av <= 0.92)) | ((av <= 0.3) & (au <= 0.92))


_MASKS: dict[str, Mask] = {
    "circle": _circle,
    "ellipse": _ellipse,
    "ring": _ring,
    "semicircle": _semicircle,
    "crescent": _crescent,
    "heart": _heart,
    "teardrop": _teardrop,
    "triangle": _polygon(_regular(3, 1.0, 90.0)),
    "square": _square,
    "rectangle": _rectangle,
    "diamond": _diamond,
    "trapezoid": _polygon([(-0.85, -0.5), (0.85, -0.5), (0.45, 0.5), (-0.45, 0.5)]),
    "parallelogram": _polygon([(-0.85, -0.42), (0.35, -0.42), (0.85, 0.42), (-0.35, 0.42)]),
    "pentagon": _polygon(_regular(5, 0.95, 90.0)),
    "hexagon": _polygon(_regular(6, 0.95, 0.0)),
    "star": _polygon(_star(5, 1.0, 0.42)),
    "cross": _cross,
    "arrow": _polygon(
        [
            (-0.95, 0.2),
            (0.1, 0.2),
            (0.1, 0.62),
            (0.95, 0.0),
            (0.1, -0.62),
            (0.1, -0.2),
            (-0.95, -0.2),
        ]
    ),
    "chevron": _polygon(
        [(0.0, 0.78), (0.78, -0.05), (0.78, -0.6), (0.0, 0.22), (-0.78, -0.6), (-0.78, -0.05)]
    ),
    "hourglass": _polygon(
        [(-0.55, 0.82), (0.55, 0.82), (0.06, 0.0), (0.55, -0.82), (-0.55, -0.82), (-0.06, 0.0)]
    ),
}


def _near_polyline(u, v, points: Sequence[tuple[float, float]], half_width: float) -> np.ndarray:
    """True within ``half_width`` of the open polyline through ``points`` (a thick stroke)."""
    near = np.zeros(np.broadcast_shapes(u.shape, v.shape), dtype=bool)
    for (x1, y1), (x2, y2) in zip(points[:-1], points[1:], strict=True):
        dx, dy = x2 - x1, y2 - y1
        along = np.clip(((u - x1) * dx + (v - y1) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
        near |= (u - x1 - along * dx) ** 2 + (v - y1 - along * dy) ** 2 <= half_width**2
    return near


def _boxes(*boxes: tuple[float, float, float, float]) -> Mask:
    """The union of axis-aligned boxes ``(u_low, u_high, v_low, v_high)``."""

    def mask(u, v, t):
        inside = np.zeros(np.broadcast_shapes(u.shape, v.shape), dtype=bool)
        for u0, u1, v0, v1 in boxes:
            inside |= (u >= u0) & (u <= u1) & (v >= v0) & (v <= v1)
        return inside

    return mask


def _trefoil(u, v, t):
    lobes = u * u + v * v <= 0.3**2
    for angle in (90.0, 210.0, 330.0):
        cx, cy = 0.5 * math.cos(math.radians(angle)), 0.5 * math.sin(math.radians(angle))
        lobes |= (u - cx) ** 2 + (v - cy) ** 2 <= 0.46**2
    return lobes


def _frame(u, v, t):
    au, av = np.abs(u), np.abs(v)
    return (au <= 0.72) & (av <= 0.72) & ((au >= 0.38) | (av >= 0.38))


def _arch(u, v, t):
    r2 = u * u + v * v
    top = (r2 <= 0.7**2) & (r2 >= 0.33**2) & (v >= 0)
    legs = (np.abs(u) >= 0.33) & (np.abs(u) <= 0.7) & (v >= -0.7) & (v < 0)
    return top | legs


def _x_mark(u, v, t):
    half = math.sqrt(0.5)
    return _cross((u - v) * half, (u + v) * half, t)


def _zigzag(u, v, t):
    points = [(-0.85, -0.35), (-0.42, 0.35), (0.0, -0.35), (0.42, 0.35), (0.85, -0.35)]
    return _near_polyline(u, v, points, 0.16)


def _spiral(u, v, t):
    # An Archimedean band: radius grows by `pitch` per turn, half of each turn is ink.
    pitch = 0.38
    radius = np.sqrt(u * u + v * v)
    turn = np.arctan2(v, u) / (2 * math.pi)
    return (np.mod(radius / pitch - turn, 1.0) < 0.5) & (radius <= 0.95) & (radius >= 0.08)


_MASKS.update(
    {
        "octagon": _polygon(_regular(8, 0.95, 22.5)),
        "kite": _polygon([(0.0, 1.0), (0.62, 0.42), (0.0, -1.0), (-0.62, 0.42)]),
        "trefoil": _trefoil,
        "frame": _frame,
        "arch": _arch,
        "x mark": _x_mark,
        "letter l": _boxes((-0.5, -0.16, -0.8, 0.8), (-0.5, 0.55, -0.8, -0.46)),
        "letter t": _boxes((-0.7, 0.7, 0.46, 0.8), (-0.17, 0.17, -0.85, 0.8)),
        "letter h": _boxes(
            (-0.6, -0.28, -0.8, 0.8), (0.28, 0.6, -0.8, 0.2), (-0.6, 0.6, -0.06, 0.2)
        ),
        "zigzag": _zigzag,
        "lightning bolt": _polygon(
            [(0.2, 1.0), (-0.5, -0.08), (-0.05, -0.08), (-0.25, -1.0), (0.5, 0.14), (0.05, 0.14)]
        ),
        "spiral": _spiral,
    }
)
assert tuple(_MASKS) == ALL_SHAPES, "every shape needs exactly one drawing, in shape-id order"


def draw_masks(
    labels: np.ndarray,
    image_size: int,
    *,
    centers: np.ndarray,
    radii: np.ndarray,
    angles_deg: np.ndarray,
    variations: np.ndarray | None = None,
) -> np.ndarray:
    """Antialiased coverage masks of the shapes, float32 ``[N, S, S]`` in [0, 1].

    ``centers`` is ``[N, 2]`` (x, y) in pixels from the top-left corner; ``radii`` ``[N]`` the
    radius in pixels of the disk each shape fits in; ``angles_deg`` ``[N]`` counter-clockwise
    rotations; ``variations`` ``[N]`` in [0, 1] picks within-class proportions (ring width,
    ellipse aspect, ...; default 0.5). Each mask is drawn at :data:`SUPERSAMPLE` times the
    resolution and area-averaged down.
    """
    labels = np.asarray(labels, dtype=np.int64)
    n = labels.shape[0]
    if variations is None:
        variations = np.full(n, 0.5, dtype=np.float32)
    fine = image_size * SUPERSAMPLE
    axis = (np.arange(fine, dtype=np.float32) + 0.5) / SUPERSAMPLE  # fine pixel centres
    masks = np.empty((n, fine, fine), dtype=bool)
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        cx = np.asarray(centers, dtype=np.float32)[idx, 0, None, None]
        cy = np.asarray(centers, dtype=np.float32)[idx, 1, None, None]
        r = np.asarray(radii, dtype=np.float32)[idx, None, None]
        theta = np.radians(np.asarray(angles_deg, dtype=np.float32)[idx, None, None])
        cos, sin = np.cos(theta), np.sin(theta)
        dx = (axis[None, None, :] - cx) / r
        dy = (cy - axis[None, :, None]) / r  # image rows grow downwards, v grows upwards
        u = cos * dx + sin * dy  # rotate the grid by -theta: the shape turns by +theta
        v = cos * dy - sin * dx
        t = np.asarray(variations, dtype=np.float32)[idx, None, None]
        masks[idx] = _MASKS[ALL_SHAPES[int(label)]](u, v, t)
    # Area averaging by strided slices: much faster than a mean over reshaped axes.
    hits = masks.view(np.uint8)
    covered = sum(
        hits[:, i::SUPERSAMPLE, j::SUPERSAMPLE].astype(np.float32)
        for i in range(SUPERSAMPLE)
        for j in range(SUPERSAMPLE)
    )
    return covered * np.float32(1.0 / SUPERSAMPLE**2)
