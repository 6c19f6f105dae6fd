"""The embedded dataset: twenty procedurally rendered shapes, built once and cached as Parquet.

Each image shows one shape of :data:`~trainables.data.embedded_taxonomy.LEAVES` over a textured,
graded background. The shape is drawn as a mask on a grid twice as fine as the image and
area-averaged down (antialiased edges). Nuisance factors vary per image: shape and background
colours (kept apart), radius, rotation (within +-``max_rotation_deg``, so that a square never
turns into a diamond), position (the shape always stays inside) and gaussian pixel noise.

Everything is a deterministic function of :class:`EmbeddedSpec`: a split is cut into fixed-size
chunks, and chunk ``k`` of split ``s`` draws from ``SeedSequence(seed, spawn_key=(s, 1, k))``,
so the bytes do not depend on how many processes render them.

Only numpy is imported at module level: spawned render workers import this module, and leaving
torch and pyarrow out keeps their start-up short. Both are imported where they are needed.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import uuid
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from trainables.cache import cache_dir, content_key, source_digest
from trainables.data.embedded_taxonomy import (
    ALL_SHAPES,
    BACKGROUNDS,
    COLOURS,
    HELD_OUT_SHAPES,
    LEAVES,
    SIZES,
)
from trainables.errors import UserInputError, must

if TYPE_CHECKING:
    import torch

#: The modules whose source decides the bytes: their digest is part of every cache key, so an
#: edit of the drawing, the seeding or the classes never reuses images rendered before it.
RENDER_SOURCES: tuple[str, ...] = ("trainables.data.embedded", "trainables.data.embedded_taxonomy")
#: Split names in seed order (the index is part of each chunk's seed).
SPLITS: tuple[str, ...] = ("train", "val", "test")
#: Images per render chunk. Part of the seeding scheme: changing it changes the data.
CHUNK_SIZE = 512
#: Below this many images in total, rendering stays in the calling process.
PARALLEL_MIN_IMAGES = 4096
#: Supersampling factor of the shape masks (drawn at 2x, area-averaged down).
SUPERSAMPLE = 2

_METADATA_KEY = b"raysearch.embedded"


# --------------------------------------------------------------------------------------------
# Spec and containers
# --------------------------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Recipe:
    """How one embedded dataset draws its images' attributes, and which attribute is the label.

    ``label`` is one of :data:`ATTRIBUTES`; ``classes`` its class names in label order.
    ``shapes`` are the shape ids an image may show (when the label is the shape, label ``i`` is
    shape ``shapes[i]``). ``named_colour`` and ``named_background`` are the probabilities that an
    image gets a named colour or background kind instead of an unnamed one; ``size_weights``
    weigh the named sizes (None: every image takes the spec's radius range).
    """

    label: str
    classes: tuple[str, ...]
    shapes: tuple[int, ...]
    named_colour: float = 0.0
    named_background: float = 0.0
    size_weights: tuple[float, ...] | None = None
    default_sizes: tuple[int, int, int] = (16000, 2000, 2000)
    purpose: str = ""

    def attributes(self, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Per image ``[shape, colour, size, background]`` (int64 ``[n, 4]``) for ``labels``."""
        n = labels.shape[0]
        shapes = np.asarray(self.shapes)
        table = np.full((n, len(ATTRIBUTES)), UNNAMED, dtype=np.int64)
        table[:, 0] = shapes[rng.integers(0, len(shapes), n)]
        colour = rng.integers(0, len(COLOURS), n)
        table[:, 1] = np.where(rng.uniform(size=n) < self.named_colour, colour, UNNAMED)
        if self.size_weights is not None:
            weights = np.asarray(self.size_weights, dtype=np.float64)
            table[:, 2] = rng.choice(len(SIZES), n, p=weights / weights.sum())
        kind = rng.integers(0, len(BACKGROUNDS), n)
        table[:, 3] = np.where(rng.uniform(size=n) < self.named_background, kind, UNNAMED)
        column = ATTRIBUTES.index(self.label)
        table[:, column] = shapes[labels] if self.label == "shape" else labels
        return table


_FINE_TUNING_SHAPES = tuple(range(len(LEAVES)))
_EVERY_SHAPE = tuple(range(len(ALL_SHAPES)))
_SUITE_SIZES = (1000, 1000, 1000)
#: Every embedded dataset by name. ``embedded`` is the fine-tuning dataset; ``embedded-world``
#: pretrains the base model on every shape and attribute; the others form the zero-shot suite
#: (classes fine-tuning never trains on).
RECIPES: dict[str, Recipe] = {
    "embedded": Recipe(
        "shape", LEAVES, _FINE_TUNING_SHAPES, purpose="fine-tuning: twenty shapes, three trees"
    ),
    "embedded-world": Recipe(
        "shape",
        ALL_SHAPES,
        _EVERY_SHAPE,
        named_colour=0.6,
        named_background=0.5,
        size_weights=(0.2, 0.4, 0.4),
        default_sizes=(48000, 2000, 2000),
        purpose="pretraining: every shape, colour, size and background",
    ),
    "embedded-heldout-shapes": Recipe(
        "shape",
        HELD_OUT_SHAPES,
        tuple(range(len(LEAVES), len(ALL_SHAPES))),
        default_sizes=_SUITE_SIZES,
        purpose="zero-shot: twelve shapes fine-tuning never sees, with a tree of their own",
    ),
    "embedded-colour": Recipe(
        "colour",
        tuple(COLOURS),
        _EVERY_SHAPE,
        named_colour=1.0,
        default_sizes=_SUITE_SIZES,
        purpose="zero-shot: the shape's colour",
    ),
    "embedded-size": Recipe(
        "size",
        tuple(SIZES),
        _EVERY_SHAPE,
        size_weights=(1.0, 1.0, 1.0),
        default_sizes=_SUITE_SIZES,
        purpose="zero-shot: the shape's size",
    ),
    "embedded-background": Recipe(
        "background",
        BACKGROUNDS,
        _EVERY_SHAPE,
        named_background=1.0,
        default_sizes=_SUITE_SIZES,
        purpose="zero-shot: the background's pattern",
    ),
}


def embedded_spec(dataset: str = "embedded", **fields: Any) -> EmbeddedSpec:
    """The spec of embedded dataset ``dataset`` with its default split sizes, ``fields`` on top."""
    if dataset not in RECIPES:
        raise must("dataset", f"one of {', '.join(map(repr, RECIPES))}", dataset)
    n_train, n_val, n_test = RECIPES[dataset].default_sizes
    return EmbeddedSpec(
        **{"dataset": dataset, "n_train": n_train, "n_val": n_val, "n_test": n_test, **fields}
    )


@dataclass(frozen=True)
class EmbeddedSpec:
    """Everything that determines the embedded dataset's bytes.

    ``radius_range`` is the shape's outer radius as a fraction of the image side (0.28-0.47 is
    about 9-15 px at 32x32); ``max_rotation_deg`` bounds the rotation either way;
    ``noise_max`` is the largest per-image gaussian noise sigma on the [0, 1] scale.
    """

    seed: int = 0
    dataset: str = "embedded"
    image_size: int = 32
    n_train: int = 16000
    n_val: int = 2000
    n_test: int = 2000
    noise_max: float = 0.06
    radius_range: tuple[float, float] = (0.28, 0.47)
    max_rotation_deg: float = 20.0

    def __post_init__(self) -> None:
        if not _is_int(self.seed) or self.seed < 0:
            raise must("seed", "a non-negative integer", self.seed)
        if not _is_int(self.image_size) or self.image_size < 32 or self.image_size % 32:
            raise must("image_size", "a multiple of 32 and at least 32", self.image_size)
        if self.dataset not in RECIPES:
            raise must("dataset", f"one of {', '.join(map(repr, RECIPES))}", self.dataset)
        classes = len(RECIPES[self.dataset].classes)
        if not _is_int(self.n_train) or self.n_train < classes:
            raise must("n_train", f"an integer >= {classes} (one per class)", self.n_train)
        for name in ("n_val", "n_test"):
            value = getattr(self, name)
            if not _is_int(value) or value < 0:
                raise must(name, "a non-negative integer", value)
        if not _is_number(self.noise_max) or not 0.0 <= self.noise_max <= 0.5:
            raise must("noise_max", "a number in [0, 0.5]", self.noise_max)
        radius = self.radius_range
        if (
            not isinstance(radius, (tuple, list))
            or len(radius) != 2
            or not all(_is_number(r) for r in radius)
            or not 0.1 <= radius[0] <= radius[1] <= 0.5
        ):
            raise must("radius_range", "two numbers 0.1 <= low <= high <= 0.5", radius)
        if not _is_number(self.max_rotation_deg) or not 0.0 <= self.max_rotation_deg <= 45.0:
            raise must("max_rotation_deg", "a number in [0, 45]", self.max_rotation_deg)
        # Normalise plain Python types so equal specs hash and compare equal.
        for name in ("seed", "image_size", "n_train", "n_val", "n_test"):
            object.__setattr__(self, name, int(getattr(self, name)))
        for name in ("noise_max", "max_rotation_deg"):
            object.__setattr__(self, name, float(getattr(self, name)))
        object.__setattr__(self, "radius_range", (float(radius[0]), float(radius[1])))

    @property
    def recipe(self) -> Recipe:
        return RECIPES[self.dataset]

    @property
    def classes(self) -> tuple[str, ...]:
        return self.recipe.classes

    def size(self, split: str) -> int:
        """The number of images in ``split`` ("train", "val" or "test")."""
        return getattr(self, f"n_{_check_split(split)}")

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain JSON-able values."""
        data = asdict(self)
        data["radius_range"] = list(self.radius_range)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EmbeddedSpec:
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise must("embedded spec", f"made of {sorted(cls.__dataclass_fields__)}", unknown)
        return cls(**data)

    def key(self) -> str:
        """Content key of the fields and of the rendering code; names the cache folder."""
        return content_key({"renderer": source_digest(*RENDER_SOURCES), **self.to_dict()})


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise must("split", f"one of {', '.join(map(repr, SPLITS))}", split)
    return split


@dataclass(frozen=True)
class ImageSplit:
    """Images and labels of one split.

    ``images`` is a uint8 tensor ``[N, 3, H, W]``; ``labels`` an int64 tensor ``[N]``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    #: int64 ``[N, len(ATTRIBUTES)]`` of an embedded split (None for other datasets).
    attributes: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(f"images must be [N, 3, H, W], got {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"labels must be [{self.images.shape[0]}], got {tuple(self.labels.shape)}"
            )
        expected = (self.images.shape[0], len(ATTRIBUTES))
        if self.attributes is not None and tuple(self.attributes.shape) != expected:
            raise ValueError(f"attributes must be {list(expected)}, got {self.attributes.shape}")

    @classmethod
    def from_numpy(
        cls, images_nhwc: np.ndarray, labels: np.ndarray, attributes: np.ndarray | None = None
    ) -> ImageSplit:
        """Build from uint8 ``[N, H, W, 3]`` images and integer labels (copies into NCHW)."""
        import torch

        chw = np.ascontiguousarray(np.asarray(images_nhwc, dtype=np.uint8).transpose(0, 3, 1, 2))
        table = None
        if attributes is not None:
            table = torch.from_numpy(np.asarray(attributes, dtype=np.int64).reshape(-1, 4))
        return cls(
            torch.from_numpy(chw), torch.from_numpy(np.asarray(labels, dtype=np.int64)), table
        )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def float_images(self) -> torch.Tensor:
        """The images as float32 in [0, 1], ``[N, 3, H, W]``."""
        return self.images.float().div_(255.0)

    def subset(self, n: int) -> ImageSplit:
        """The first ``n`` images (all of them when ``n`` exceeds the size)."""
        if not _is_int(n) or n < 0:
            raise must("n", "a non-negative integer", n)
        attributes = None if self.attributes is None else self.attributes[:n]
        return ImageSplit(self.images[:n], self.labels[:n], attributes)


# --------------------------------------------------------------------------------------------
# Shapes: masks over unit shape coordinates (u right, v up); every shape fits the unit disk
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------

#: Per-image attributes every render records, in column order. Each is an index into its name
#: list (shape: :data:`ALL_SHAPES`; colour: :data:`COLOURS`; size: :data:`SIZES`; background:
#: :data:`BACKGROUNDS`), or :data:`UNNAMED` for a random colour, the spec's radius range, or the
#: textured gradient background.
ATTRIBUTES: tuple[str, ...] = ("shape", "colour", "size", "background")
UNNAMED = -1
#: Smallest RGB distance between the shape colour and either end of the background gradient.
_MIN_COLOUR_GAP = 0.45
_GRADIENT_SPAN = 0.15  # per channel, between the two ends of the background gradient
_PATTERN_CONTRAST = 0.3  # brightness step between the two tones of a patterned background
_COLOUR_JITTER = 0.06  # per channel, around a named colour
_TEXTURE_AMPLITUDE = 0.1
_TEXTURE_GRID = 6  # coarse value-noise grid, upsampled bilinearly
_NAMED_RGB = np.array(list(COLOURS.values()), dtype=np.float32)


def _gap(fg: np.ndarray, bg0: np.ndarray, bg1: np.ndarray) -> np.ndarray:
    return np.minimum(np.linalg.norm(fg - bg0, axis=1), np.linalg.norm(fg - bg1, axis=1))


def _background_tones(
    rng: np.random.Generator, n: int, patterned: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The two ends of each gradient, or the two tones of each pattern (clearly apart)."""
    bg0 = rng.uniform(0.0, 1.0, (n, 3)).astype(np.float32)
    shift = rng.uniform(-_GRADIENT_SPAN, _GRADIENT_SPAN, (n, 3)).astype(np.float32)
    # A pattern's second tone is brighter or darker by a fixed step, whichever fits in [0, 1].
    step = np.where(bg0.mean(axis=1, keepdims=True) > 0.5, -_PATTERN_CONTRAST, _PATTERN_CONTRAST)
    shift = np.where(patterned[:, None], step + 0.3 * shift, shift)
    return bg0, np.clip(bg0 + shift, 0.0, 1.0).astype(np.float32)


def _colours(
    rng: np.random.Generator, colour: np.ndarray, patterned: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Background tones and shape colours ``[n, 3]``, the shape far from both tones.

    A random shape colour is redrawn until it stands apart; a named one keeps its colour (with a
    small jitter) and the background is redrawn instead.
    """
    n = colour.shape[0]
    named = colour != UNNAMED
    bg0, bg1 = _background_tones(rng, n, patterned)
    fg = rng.uniform(0.0, 1.0, (n, 3)).astype(np.float32)
    jitter = rng.uniform(-_COLOUR_JITTER, _COLOUR_JITTER, (n, 3)).astype(np.float32)
    fg[named] = np.clip(_NAMED_RGB[colour[named]] + jitter[named], 0.0, 1.0)
    for _ in range(100):
        redo = np.flatnonzero(_gap(fg, bg0, bg1) < _MIN_COLOUR_GAP)
        if redo.size == 0:
            break
        keep = named[redo]
        fg[redo[~keep]] = rng.uniform(0.0, 1.0, (int((~keep).sum()), 3))
        bg0[redo[keep]], bg1[redo[keep]] = _background_tones(
            rng, int(keep.sum()), patterned[redo[keep]]
        )
    else:  # practically unreachable; push any leftover to the opposite corner of the cube
        fg[redo] = np.where(bg0[redo] > 0.5, 0.0, 1.0)
    return bg0, bg1, fg


def _upsample(coarse: np.ndarray, size: int) -> np.ndarray:
    """Bilinear upsampling of ``[n, G, G]`` grids to ``[n, size, size]``.

    Plain gathers rather than a matrix product: BLAS threads would oversubscribe the cores
    when several render processes run at once.
    """
    grid = coarse.shape[-1]
    pos = (np.arange(size, dtype=np.float32) + 0.5) / size * (grid - 1)
    low = np.clip(np.floor(pos).astype(np.int64), 0, grid - 2)
    frac = pos - low
    rows = coarse[:, low, :] * (1.0 - frac)[:, None] + coarse[:, low + 1, :] * frac[:, None]
    return rows[:, :, low] * (1.0 - frac) + rows[:, :, low + 1] * frac


def _pattern(rng: np.random.Generator, kind: str, n: int, size: int) -> np.ndarray:
    """Where the second tone shows, float32 ``[n, S, S]`` in [0, 1], for a named background."""
    axis = np.arange(size, dtype=np.float32) + 0.5
    x, y = axis[None, None, :], axis[None, :, None]
    period = size / 3.2  # cells of 5 px at 32x32: wide enough to read as a pattern, not speckle
    phase = rng.uniform(0.0, period, (n, 2, 1, 1)).astype(np.float32)
    if kind == "plain":
        return np.zeros((n, size, size), dtype=np.float32)
    if kind == "checkered":
        cells = np.floor((x + phase[:, 0]) / (period / 2)) + np.floor(
            (y + phase[:, 1]) / (period / 2)
        )
        return np.mod(cells, 2).astype(np.float32)
    if kind == "dotted":
        dx = np.mod(x + phase[:, 0], period) - period / 2
        dy = np.mod(y + phase[:, 1], period) - period / 2
        return (dx * dx + dy * dy <= (0.25 * period) ** 2).astype(np.float32)
    raise ValueError(f"unknown background kind {kind!r}")


def _backgrounds(
    rng: np.random.Generator, bg0: np.ndarray, bg1: np.ndarray, size: int, kind: np.ndarray
) -> np.ndarray:
    """Backgrounds, float32 ``[n, 3, S, S]`` (unclipped): a textured gradient, or a named kind."""
    n = bg0.shape[0]
    direction = rng.uniform(0.0, 2.0 * np.pi, n).astype(np.float32)
    axis = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    ramp = (
        np.cos(direction)[:, None, None] * axis[None, None, :]
        + np.sin(direction)[:, None, None] * axis[None, :, None]
    ) * np.float32(1.0 / math.sqrt(2.0)) + np.float32(0.5)  # 0..1 along the gradient direction
    coarse = rng.uniform(-1.0, 1.0, (n, _TEXTURE_GRID, _TEXTURE_GRID)).astype(np.float32)
    texture = _upsample(coarse, size)
    texture *= rng.uniform(0.3, 1.0, (n, 1, 1)).astype(np.float32) * np.float32(_TEXTURE_AMPLITUDE)
    tint = rng.uniform(0.5, 1.0, (n, 3, 1, 1)).astype(np.float32)
    named = kind != UNNAMED
    texture[named] = 0.0  # a named background is its pattern and nothing else
    for index, name in enumerate(BACKGROUNDS):
        rows = np.flatnonzero(kind == index)
        if rows.size:
            ramp[rows] = _pattern(rng, name, rows.size, size)
    image = ramp[:, None] * (bg1 - bg0)[:, :, None, None]
    image += bg0[:, :, None, None]
    image += texture[:, None] * tint
    return image


def _radii(rng: np.random.Generator, size_class: np.ndarray, default: tuple[float, float]):
    low = np.full(size_class.shape, default[0], dtype=np.float32)
    high = np.full(size_class.shape, default[1], dtype=np.float32)
    for index, (name_low, name_high) in enumerate(SIZES.values()):
        low[size_class == index], high[size_class == index] = name_low, name_high
    return low + rng.uniform(0.0, 1.0, size_class.shape).astype(np.float32) * (high - low)


def render_images(
    labels: np.ndarray,
    rng: np.random.Generator,
    image_size: int = 32,
    *,
    noise_max: float = 0.06,
    radius_range: tuple[float, float] = (0.28, 0.47),
    max_rotation_deg: float = 20.0,
    colour: np.ndarray | None = None,
    size_class: np.ndarray | None = None,
    background: np.ndarray | None = None,
) -> np.ndarray:
    """Render one image per shape id in ``labels``; a pure function of its arguments and ``rng``.

    Returns uint8 ``[N, S, S, 3]`` (HWC). ``colour``, ``size_class`` and ``background`` are
    per-image indices into :data:`COLOURS`, :data:`SIZES` and :data:`BACKGROUNDS`, or
    :data:`UNNAMED` (the default for all): a random colour kept apart from the background, a
    radius from ``radius_range`` times the image side, a textured gradient. The rotation is drawn
    from +-``max_rotation_deg``, the centre so that the shape stays inside the image (a pixel
    from the edge when the radius leaves room), and the noise sigma from [0, ``noise_max``].
    """
    labels = np.asarray(labels, dtype=np.int64)
    n, size = labels.shape[0], image_size
    unnamed = np.full(n, UNNAMED, dtype=np.int64)
    colour = unnamed if colour is None else np.asarray(colour, dtype=np.int64)
    size_class = unnamed if size_class is None else np.asarray(size_class, dtype=np.int64)
    background = unnamed if background is None else np.asarray(background, dtype=np.int64)
    bg0, bg1, fg = _colours(rng, colour, background > 0)  # "plain" (0) needs no second tone
    radii = _radii(rng, size_class, radius_range) * size
    slack = np.maximum(size / 2.0 - radii - 1.0, 0.0)  # keeps the whole shape inside
    centers = size / 2.0 + rng.uniform(-1.0, 1.0, (n, 2)).astype(np.float32) * slack[:, None]
    angles = rng.uniform(-max_rotation_deg, max_rotation_deg, n).astype(np.float32)
    variations = rng.uniform(0.0, 1.0, n).astype(np.float32)
    alpha = draw_masks(
        labels, size, centers=centers, radii=radii, angles_deg=angles, variations=variations
    )[:, None]
    # Channel-first while compositing: broadcasts then run over whole image planes.
    image = _backgrounds(rng, bg0, bg1, size, background)
    image -= fg[:, :, None, None]
    image *= 1.0 - alpha
    image += fg[:, :, None, None]  # = background * (1 - alpha) + shape colour * alpha
    sigma = rng.uniform(0.0, noise_max, (n, 1, 1, 1)).astype(np.float32)
    image += sigma * rng.standard_normal(image.shape, dtype=np.float32)
    image *= np.float32(255.0)
    image += np.float32(0.5)  # round to nearest on the cast below (values are clipped >= 0)
    np.clip(image, 0.0, 255.0, out=image)
    return np.ascontiguousarray(image.astype(np.uint8).transpose(0, 2, 3, 1))


# --------------------------------------------------------------------------------------------
# Building a split (deterministic, chunked, optionally in worker processes)
# --------------------------------------------------------------------------------------------


def split_labels(spec: EmbeddedSpec, split: str) -> np.ndarray:
    """Balanced, shuffled labels of ``split`` (class counts differ by at most one)."""
    index = SPLITS.index(_check_split(split))
    rng = np.random.default_rng(np.random.SeedSequence(spec.seed, spawn_key=(index, 0)))
    classes = len(spec.recipe.classes)
    return rng.permutation(np.arange(spec.size(split)) % classes).astype(np.int64)


def _render_chunk(
    spec_fields: dict[str, Any], split_index: int, chunk: int, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[n, S, S, 3]`` and attributes ``[n, len(ATTRIBUTES)]`` of one chunk."""
    spec = EmbeddedSpec.from_dict(spec_fields)
    rng = np.random.default_rng(
        np.random.SeedSequence(spec.seed, spawn_key=(split_index, 1, chunk))
    )
    attributes = spec.recipe.attributes(labels, rng)
    images = render_images(
        attributes[:, 0],
        rng,
        spec.image_size,
        noise_max=spec.noise_max,
        radius_range=spec.radius_range,
        max_rotation_deg=spec.max_rotation_deg,
        colour=attributes[:, 1],
        size_class=attributes[:, 2],
        background=attributes[:, 3],
    )
    return images, attributes


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _render_in_pool(fields: dict[str, Any], jobs: list, workers: int) -> list[np.ndarray] | None:
    """Render ``jobs`` in ``workers`` spawned processes; None when the pool could not run."""
    context = multiprocessing.get_context("spawn")  # never fork a parent that runs threads
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = [
                pool.submit(_render_chunk, fields, SPLITS.index(s), k, lab) for s, k, lab in jobs
            ]
            return [future.result() for future in futures]
    except BrokenProcessPool:
        # Typically a script without an `if __name__ == "__main__":` guard, which spawned
        # children re-run. Rendering in this process gives the same bytes, only slower.
        warnings.warn(
            "embedded dataset: render processes failed to start (does the main script lack an "
            "`if __name__ == '__main__':` guard?); rendering in this process instead.",
            RuntimeWarning,
            stacklevel=3,
        )
        return None


def generate_splits(
    spec: EmbeddedSpec, splits: Sequence[str] = SPLITS, *, workers: int | None = None
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Render ``splits`` in memory: ``{split: (images, labels, attributes)}``.

    Images are uint8 ``[N, S, S, 3]``, labels int64 ``[N]``, attributes int64 ``[N, 4]`` (the
    columns of :data:`ATTRIBUTES`).

    ``workers`` processes render the chunks (default: up to 4 of the available cores when there
    are at least :data:`PARALLEL_MIN_IMAGES` images, else 1). The result does not depend on it.
    """
    if workers is not None and (not _is_int(workers) or workers < 1):
        raise must("workers", "a positive integer", workers)
    labels = {split: split_labels(spec, split) for split in splits}
    jobs = [
        (split, chunk, labels[split][start : start + CHUNK_SIZE])
        for split in splits
        for chunk, start in enumerate(range(0, spec.size(split), CHUNK_SIZE))
    ]
    if workers is None:
        total = sum(len(job[2]) for job in jobs)
        workers = min(_available_cpus(), 4) if total >= PARALLEL_MIN_IMAGES else 1
    workers = max(1, min(workers, len(jobs)))
    fields = spec.to_dict()
    if multiprocessing.current_process().daemon:
        workers = 1  # daemonic processes may not start children
    rendered = None
    if workers > 1:
        rendered = _render_in_pool(fields, jobs, workers)
    if rendered is None:
        rendered = [_render_chunk(fields, SPLITS.index(s), k, lab) for s, k, lab in jobs]
    size = spec.image_size
    out = {}
    for split in splits:
        parts = [part for (s, _, _), part in zip(jobs, rendered, strict=True) if s == split]
        if parts:
            images = np.concatenate([part[0] for part in parts])
            attributes = np.concatenate([part[1] for part in parts])
        else:
            images = np.empty((0, size, size, 3), np.uint8)
            attributes = np.empty((0, len(ATTRIBUTES)), np.int64)
        out[split] = (images, labels[split], attributes)
    return out


# --------------------------------------------------------------------------------------------
# Parquet cache
# --------------------------------------------------------------------------------------------


def embedded_cache_path(spec: EmbeddedSpec) -> Path:
    """The cache folder of ``spec`` (the folder itself is not created)."""
    return cache_dir("datasets") / f"embedded-{spec.key()}"


def _split_file(folder: Path, split: str) -> Path:
    return folder / f"{split}.parquet"


def is_cached(spec: EmbeddedSpec) -> bool:
    """Whether every split of ``spec`` is already in the cache."""
    folder = embedded_cache_path(spec)
    return all(_split_file(folder, split).is_file() for split in SPLITS)


def _metadata(spec: EmbeddedSpec, split: str) -> dict[bytes, bytes]:
    info = {
        "renderer": source_digest(*RENDER_SOURCES),
        "spec": spec.to_dict(),
        "split": split,
        "image_shape": [spec.image_size, spec.image_size, 3],
        "image_layout": "HWC uint8",
        "classes": list(spec.classes),
        "attributes": list(ATTRIBUTES),
    }
    return {_METADATA_KEY: json.dumps(info, sort_keys=True).encode()}


def _write_split(
    path: Path,
    spec: EmbeddedSpec,
    split: str,
    images: np.ndarray,
    labels: np.ndarray,
    attributes: np.ndarray,
) -> None:
    """Write one split atomically: a uniquely named temporary file, then a rename."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = images.shape[0]
    per_image = int(np.prod(images.shape[1:]))
    large = n * per_image >= 2**31  # 32-bit offsets would overflow
    offsets = np.arange(n + 1, dtype=np.int64 if large else np.int32) * per_image
    image_column = pa.Array.from_buffers(
        pa.large_binary() if large else pa.binary(),
        n,
        [None, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(images))],
    )
    table = pa.table(
        {
            "image": image_column,
            "label": pa.array(labels.astype(np.int16)),
            **{
                name: pa.array(attributes[:, i].astype(np.int8))
                for i, name in enumerate(ATTRIBUTES)
            },
        },
    ).replace_schema_metadata(_metadata(spec, split))
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        pq.write_table(table, tmp, compression="none")
        os.replace(tmp, path)  # atomic: readers see the old file or the whole new one
    finally:
        tmp.unlink(missing_ok=True)


def _read_split(path: Path, spec: EmbeddedSpec, split: str) -> ImageSplit | None:
    """Read one cached split; None when the file is missing, unreadable or for another spec."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (FileNotFoundError, OSError, pa.ArrowException):
        return None
    raw = (table.schema.metadata or {}).get(_METADATA_KEY)
    try:
        info = json.loads(raw) if raw else {}
    except ValueError:
        return None
    expected = json.loads(_metadata(spec, split)[_METADATA_KEY])
    if info != expected or table.num_rows != spec.size(split):
        return None
    size = spec.image_size
    per_image = size * size * 3
    column = table.column("image").combine_chunks()
    if column.null_count:
        return None
    labels = table.column("label").to_numpy().astype(np.int64)
    attributes = np.stack(
        [table.column(name).to_numpy().astype(np.int64) for name in ATTRIBUTES], axis=1
    ).reshape(len(labels), len(ATTRIBUTES))
    if len(column) == 0:
        return ImageSplit.from_numpy(np.empty((0, size, size, 3), np.uint8), labels, attributes)
    offset_type = np.int64 if pa.types.is_large_binary(column.type) else np.int32
    buffers = column.buffers()
    offsets = np.frombuffer(buffers[1], dtype=offset_type)
    offsets = offsets[column.offset : column.offset + len(column) + 1]
    if len(offsets) and np.any(np.diff(offsets) != per_image):
        return None
    start = int(offsets[0]) if len(offsets) else 0
    data = np.frombuffer(buffers[2], dtype=np.uint8, count=len(column) * per_image, offset=start)
    images = data.reshape(len(column), size, size, 3)
    return ImageSplit.from_numpy(images, labels, attributes)


@dataclass(frozen=True)
class EmbeddedDataset:
    """The cached embedded dataset of one spec; :meth:`split` reads (and memoises) a split."""

    spec: EmbeddedSpec
    cache_path: Path
    classes: tuple[str, ...] = LEAVES
    _loaded: dict[str, ImageSplit] = field(default_factory=dict, repr=False, compare=False)

    def split(self, name: str) -> ImageSplit:
        """The "train", "val" or "test" split."""
        _check_split(name)
        if name not in self._loaded:
            path = _split_file(self.cache_path, name)
            loaded = _read_split(path, self.spec, name)
            if loaded is None:  # removed or replaced since load_embedded: rebuild it
                _build(self.spec, [name], workers=None)
                loaded = _read_split(path, self.spec, name)
            if loaded is None:
                raise UserInputError(f"could not read the embedded cache file {path}.")
            self._loaded[name] = loaded
        return self._loaded[name]

    def sizes(self) -> dict[str, int]:
        return {split: self.spec.size(split) for split in SPLITS}


def _build(spec: EmbeddedSpec, splits: Sequence[str], *, workers: int | None) -> None:
    folder = embedded_cache_path(spec)
    folder.mkdir(parents=True, exist_ok=True)
    for split, rendered in generate_splits(spec, splits, workers=workers).items():
        _write_split(_split_file(folder, split), spec, split, *rendered)


def load_embedded(
    spec: EmbeddedSpec | None = None, *, workers: int | None = None
) -> EmbeddedDataset:
    """The embedded dataset of ``spec`` (default spec when None), rendered first if not cached.

    The cache lives in ``cache_dir("datasets", f"embedded-{spec.key()}")``: one Parquet file per
    split with columns ``image`` (raw HWC uint8 bytes) and ``label``, and the spec in the schema
    metadata. Files are written atomically, so concurrent builders all end with a valid cache.
    A file that cannot be read or belongs to another spec is rendered again.
    """
    spec = EmbeddedSpec() if spec is None else spec
    if not isinstance(spec, EmbeddedSpec):
        raise must("spec", "an EmbeddedSpec or None", spec)
    folder = embedded_cache_path(spec)
    missing = [s for s in SPLITS if not _split_file(folder, s).is_file()]
    if missing:
        _build(spec, missing, workers=workers)
    return EmbeddedDataset(spec=spec, cache_path=folder, classes=spec.classes)
