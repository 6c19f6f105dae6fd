"""Per-level schedules: explicit logit margins, and the weights of the levels' cross-entropies.

The method realises margins implicitly through depth (METHOD.md, margin theorem): prototypes
near the boundary of the ball allow larger logit margins than prototypes near the origin. This
module makes them explicit and searchable. Level ``l`` (0 = the leaves, ``L`` = nearest the root)
gets the additive margin

    ``m_l = base * shape(l) * warmup(epoch)``

which is subtracted from the target logit, as in CosFace. Margins are in *distance units* for the
hyperbolic head (target logit ``-(d + m) / tau``) and in *cosine units* for the euclidean head
(target logit ``scale * (cos - m)``). In both cases the target logit drops by ``m / temperature``,
where :attr:`trainables.head.HeadOutput.temperature` is ``tau`` or ``1 / logit_scale``; see
:func:`apply_margin`.

``base = 0`` (the default) turns margins off: the paper's implicit-margin variant.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from trainables.errors import must
from trainables.geometry import max_viable_margin
from trainables.numbers import is_finite_number

__all__ = ["MARGIN_SHAPES", "MarginSchedule", "apply_margin", "level_margins"]

#: The shapes a margin schedule may take over the levels.
MARGIN_SHAPES = ("constant", "linear", "geometric", "theorem")


#: How the levels of a tree weigh in HITA and in the universal attack's objective.
LEVEL_WEIGHTS = ("linear", "uniform")


def level_weights(depth: int, scheme: str = "linear") -> list[float]:
    """Weights of levels ``0..depth``: ``1 - l / (depth + 1)`` (``"linear"``: 1 at the leaves,
    less towards the root) or all 1 (``"uniform"``)."""
    if scheme not in LEVEL_WEIGHTS:
        raise must("weights", f"one of {list(LEVEL_WEIGHTS)}", scheme)
    if scheme == "uniform":
        return [1.0] * (depth + 1)
    return [1.0 - level / (depth + 1) for level in range(depth + 1)]


@dataclass(frozen=True)
class MarginSchedule:
    """How the additive margin of each level is set.

    Attributes:
        shape: how the margin varies with the level ``l`` (0 = leaves, ``L`` = nearest the root):

            - ``"constant"`` (default): ``1`` at every level;
            - ``"linear"``: ``(L + 1 - l) / (L + 1)``, largest at the leaves and smallest near
              the root, the direction of the margin theorem;
            - ``"geometric"``: ``ratio ** l``;
            - ``"theorem"``: ``kappa * max_viable_margin(eta_l, r)``, a fraction of the largest
              margin the hyperbolic classifier allows at level ``l``'s mean text-embedding norm
              ``eta_l`` (:func:`trainables.geometry.max_viable_margin`, antipodal prototypes).
        base: overall scale of the margins, >= 0. Default 0.0: no explicit margins (the paper's
            implicit-margin variant). Distance units (hyperbolic head) or cosine units
            (euclidean head).
        ratio: decay per level of the ``"geometric"`` shape, in (0, 1]. Default 0.5.
        kappa: fraction of the maximum viable margin of the ``"theorem"`` shape, in [0, 1].
            Default 0.1.
        warmup_epochs: margins ramp in linearly over this many (fractional) epochs, >= 0.
            Default 0.0: full margins from the first step.
    """

    shape: str = "constant"
    base: float = 0.0
    ratio: float = 0.5
    kappa: float = 0.1
    warmup_epochs: float = 0.0

    def __post_init__(self) -> None:
        if self.shape not in MARGIN_SHAPES:
            raise must("margins.shape", f"one of {list(MARGIN_SHAPES)}", self.shape)
        if not (is_finite_number(self.base) and self.base >= 0):
            raise must("margins.base", "a finite number >= 0", self.base)
        if not (is_finite_number(self.ratio) and 0 < self.ratio <= 1):
            raise must("margins.ratio", "a number in (0, 1]", self.ratio)
        if not (is_finite_number(self.kappa) and 0 <= self.kappa <= 1):
            raise must("margins.kappa", "a number in [0, 1]", self.kappa)
        if not (is_finite_number(self.warmup_epochs) and self.warmup_epochs >= 0):
            raise must("margins.warmup_epochs", "a finite number >= 0", self.warmup_epochs)

    @property
    def enabled(self) -> bool:
        """Whether any level can get a non-zero margin."""
        return self.base > 0 and not (self.shape == "theorem" and self.kappa == 0)

    def warmup(self, epoch: float) -> float:
        """The warm-up factor ``min(1, epoch / warmup_epochs)`` (1 without warm-up)."""
        if not (is_finite_number(epoch) and epoch >= 0):
            raise must("epoch", "a finite number >= 0", epoch)
        if self.warmup_epochs == 0:
            return 1.0
        return min(1.0, epoch / self.warmup_epochs)


def level_margins(
    schedule: MarginSchedule,
    depth: int,
    *,
    epoch: float,
    level_norms: torch.Tensor | None = None,
    curvature: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """The margin of every level of a tree, ``m_l = base * shape(l) * warmup(epoch)``.

    Args:
        schedule: the margin schedule.
        depth: the tree's depth ``L`` (levels ``0..L``), an integer >= 0.
        epoch: the (fractional) training epoch, >= 0, for the warm-up.
        level_norms: ``[L + 1]`` mean norm of the text embeddings of each level (needed by the
            ``"theorem"`` shape only). Detached here: margins are targets, not trained.
        curvature: curvature magnitude ``r`` of the ball, float or tensor (``"theorem"`` only;
            detached).

    Returns:
        Float32 tensor ``[L + 1]`` of margins, in ``[0, inf)``, on the device of
        ``level_norms`` (else ``curvature``, else the CPU). All zeros when ``base = 0``, in which
        case neither norms nor curvature are needed.

    Raises:
        UserInputError: for a bad depth or epoch, or a ``"theorem"`` schedule without
            ``level_norms`` of shape ``[L + 1]`` and a curvature.
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
        raise must("depth", "an integer >= 0", depth)
    warmup = schedule.warmup(epoch)
    device = torch.device("cpu")
    if isinstance(level_norms, torch.Tensor):
        device = level_norms.device
    elif isinstance(curvature, torch.Tensor):
        device = curvature.device
    if schedule.base == 0:
        return torch.zeros(depth + 1, device=device)
    levels = torch.arange(depth + 1, dtype=torch.float32, device=device)
    if schedule.shape == "constant":
        shape = torch.ones_like(levels)
    elif schedule.shape == "linear":
        shape = (depth + 1 - levels) / (depth + 1)
    elif schedule.shape == "geometric":
        shape = schedule.ratio**levels
    else:
        if not isinstance(level_norms, torch.Tensor) or level_norms.shape != (depth + 1,):
            shown = None if level_norms is None else getattr(level_norms, "shape", level_norms)
            raise must(
                "level_norms",
                f"a tensor of the {depth + 1} level mean text norms for the 'theorem' margins",
                shown,
            )
        if curvature is None:
            raise must("curvature", "given for the 'theorem' margins", None)
        if isinstance(curvature, torch.Tensor):
            curvature = curvature.detach().float()
        eta = level_norms.detach().float()
        shape = schedule.kappa * max_viable_margin(eta, curvature)
    return (schedule.base * warmup) * shape.to(torch.float32)


def apply_margin(
    logits: torch.Tensor,
    targets: torch.Tensor,
    margin: float | torch.Tensor,
    temperature: float | torch.Tensor,
) -> torch.Tensor:
    """Lower each row's target logit by ``margin / temperature``; other logits are unchanged.

    For the hyperbolic head (logits ``-d / tau``) the target becomes ``-(d + m) / tau``; for the
    euclidean head (logits ``scale * cos``, temperature ``1 / scale``) it becomes
    ``scale * (cos - m)``.

    Args:
        logits: ``[B, C]`` logits.
        targets: LongTensor ``[B]`` of target columns, in ``[0, C)``.
        margin: the margin ``m`` (float or 0-dim tensor), >= 0.
        temperature: the head's temperature, > 0.

    Returns:
        ``[B, C]`` logits with the margin applied (a new tensor).
    """
    if not isinstance(margin, torch.Tensor) and margin == 0:
        return logits
    target_mask = F.one_hot(targets, logits.shape[-1]).to(logits.dtype)
    return logits - target_mask * (margin / temperature)
