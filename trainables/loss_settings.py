"""The open settings of the hierarchical loss (METHOD.md) and their checks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from trainables.errors import must
from trainables.margins import LEVEL_WEIGHTS, MarginSchedule
from trainables.numbers import is_finite_number

SUPERCLASS_IMAGES = ("hypavg", "image")
NEGATIVES = ("none", "up", "down", "both")
FOREST_REDUCTIONS = ("sum", "mean")


def _check_choice(name: str, value, choices: Sequence[str]) -> None:
    if value not in choices:
        raise must(name, f"one of {list(choices)}", value)


def _check_non_negative(name: str, value) -> None:
    if not (is_finite_number(value) and value >= 0):
        raise must(name, "a finite number >= 0", value)


@dataclass(frozen=True)
class HierarchicalSettings:
    """The open settings of the hierarchical loss (METHOD.md), with the defaults used.

    Attributes:
        level_weights: weight ``w_l`` of level ``l``'s cross-entropy in HITA: ``"linear"``
            (default, the paper's ``w_l = 1 - l / (L + 1)``: levels near the leaves weigh more)
            or ``"uniform"`` (``w_l = 1``).
        margins: explicit additive margins per level. Default ``MarginSchedule()``
            (``base = 0``): the paper's method, whose margins are implicit (depth in the ball).
            Explicit schedules (constant, linear, geometric, or "theorem": a fraction ``kappa``
            of the maximum viable margin at each level's mean text norm) are this project's
            searchable variant; ``raysearch compare`` runs one as ``hrz-forest+margins``. A
            mapping is turned into a :class:`MarginSchedule`.
        superclass_images: the image embedding scored at a superclass level ``l >= 1``:
            ``"hypavg"`` (default, the paper's HypAvg: the Einstein midpoint of the batch's
            images under each superclass, built recursively from the leaves up with one uniform
            weight per child group; the cross-entropy averages over the superclasses present in
            the batch) or ``"image"`` (each image's own embedding, an ablation). The leaf level
            always scores each image.
        negatives: hierarchical negative sampling (HNSA), the adjacent levels whose nodes join
            the softmax denominator as extra negatives: ``"none"``, ``"up"`` (level ``l + 1``),
            ``"down"`` (level ``l - 1``) or ``"both"`` (default, the paper's best). Only nodes
            sharing no edge with the target are added: every level-``l + 1`` node but the
            target's parent, and every level-``l - 1`` node but the target's children.
        vic_weight: ``lambda_1``, weight of the visual-in-cone term, >= 0. Default 1.0.
        vic_radius: ``zeta_vic``, radius (hyperbolic distance) around the leaf's text
            embedding within which an image embedding is not penalised, >= 0. Default 1.0.
        gap_weight: ``lambda_2``, weight of the two norm-order gap terms, >= 0. Default 0.1.
        gap_margin: ``zeta_gap``, how much smaller (in Euclidean norm) a parent's text
            embedding must be than its child's, >= 0. Default 0.05.
        forest_reduction: how the per-tree terms (HITA and the gaps) combine over the trees:
            ``"sum"`` (default, the paper) or ``"mean"``.
    """

    level_weights: str = "linear"
    margins: MarginSchedule = field(default_factory=MarginSchedule)
    superclass_images: str = "hypavg"
    negatives: str = "both"
    vic_weight: float = 1.0
    vic_radius: float = 1.0
    gap_weight: float = 0.1
    gap_margin: float = 0.05
    forest_reduction: str = "sum"

    def __post_init__(self) -> None:
        _check_choice("loss.level_weights", self.level_weights, LEVEL_WEIGHTS)
        if isinstance(self.margins, Mapping):
            object.__setattr__(self, "margins", MarginSchedule(**self.margins))
        if not isinstance(self.margins, MarginSchedule):
            raise must("loss.margins", "a MarginSchedule or a mapping of its fields", self.margins)
        _check_choice("loss.superclass_images", self.superclass_images, SUPERCLASS_IMAGES)
        _check_choice("loss.negatives", self.negatives, NEGATIVES)
        for name in ("vic_weight", "vic_radius", "gap_weight", "gap_margin"):
            _check_non_negative(f"loss.{name}", getattr(self, name))
        _check_choice("loss.forest_reduction", self.forest_reduction, FOREST_REDUCTIONS)

    @property
    def negatives_up(self) -> bool:
        return self.negatives in ("up", "both")

    @property
    def negatives_down(self) -> bool:
        return self.negatives in ("down", "both")


# -- pure functions --------------------------------------------------------------------------
