"""What decides an embedded dataset's bytes: each dataset's recipe and the spec of one build."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from trainables.cache import content_key, source_digest
from trainables.data.embedded_taxonomy import (
    ALL_SHAPES,
    ATTRIBUTES,
    BACKGROUNDS,
    COLOURS,
    HELD_OUT_SHAPES,
    LEAVES,
    SIZES,
    UNNAMED,
)
from trainables.data.splits import check_split
from trainables.errors import must
from trainables.numbers import is_integer, is_number

#: The modules whose source decides the bytes: their digest is part of every cache key, so an
#: edit of the drawing, the seeding or the classes never reuses images rendered before it.
RENDER_SOURCES: tuple[str, ...] = (
    "trainables.data.embedded",
    "trainables.data.embedded_spec",
    "trainables.data.embedded_shapes",
    "trainables.data.embedded_render",
    "trainables.data.embedded_taxonomy",
    "trainables.data.splits",
)


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
        if not is_integer(self.seed) or self.seed < 0:
            raise must("seed", "a non-negative integer", self.seed)
        if not is_integer(self.image_size) or self.image_size < 32 or self.image_size % 32:
            raise must("image_size", "a multiple of 32 and at least 32", self.image_size)
        if self.dataset not in RECIPES:
            raise must("dataset", f"one of {', '.join(map(repr, RECIPES))}", self.dataset)
        classes = len(RECIPES[self.dataset].classes)
        if not is_integer(self.n_train) or self.n_train < classes:
            raise must("n_train", f"an integer >= {classes} (one per class)", self.n_train)
        for name in ("n_val", "n_test"):
            value = getattr(self, name)
            if not is_integer(value) or value < 0:
                raise must(name, "a non-negative integer", value)
        if not is_number(self.noise_max) or not 0.0 <= self.noise_max <= 0.5:
            raise must("noise_max", "a number in [0, 0.5]", self.noise_max)
        radius = self.radius_range
        if (
            not isinstance(radius, (tuple, list))
            or len(radius) != 2
            or not all(is_number(r) for r in radius)
            or not 0.1 <= radius[0] <= radius[1] <= 0.5
        ):
            raise must("radius_range", "two numbers 0.1 <= low <= high <= 0.5", radius)
        if not is_number(self.max_rotation_deg) or not 0.0 <= self.max_rotation_deg <= 45.0:
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
        return getattr(self, f"n_{check_split(split)}")

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
