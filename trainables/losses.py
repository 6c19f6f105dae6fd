"""The hierarchical loss of the method (the baselines: :mod:`trainables.baseline_losses`).

Every loss is a small module whose ``forward`` returns a dict of named tensors (STYLE.md, "losses
as small modules"). The training step sums every entry whose key ends in ``_loss`` and logs the
others (diagnostics, detached) as they are. Each loss class states in ``needs`` which forward
passes it uses, so the step computes only those:

- ``"adversarial"``: the trained model on the adversarial images;
- ``"clean"``: the trained model on the clean images;
- ``"reference_adversarial"`` / ``"reference_clean"``: the frozen original model on them.

The hierarchical loss (METHOD.md) is

    ``L = HITA + lambda_1 L_vic + lambda_2 (L_gap^Label + L_gap^Intra)``

with HITA the per-level cross-entropy of every tree, with optional explicit margins
(:mod:`trainables.margins`) and hierarchical negatives (HNSA). The level weights ``w_l`` are
:func:`trainables.margins.level_weights`, shared with the universal attack's objective. The
settings are :mod:`trainables.loss_settings`, the precomputed index tables
:mod:`trainables.loss_tables`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from trainables import geometry
from trainables.errors import must
from trainables.head import HeadLayout, HeadOutput
from trainables.loss_settings import HierarchicalSettings
from trainables.loss_tables import build_loss_tables, level_size
from trainables.margins import level_margins

__all__ = [
    "HierarchicalLoss",
    "HierarchicalSettings",
    "Objective",
]

Objective = Callable[[HeadOutput, torch.Tensor], torch.Tensor]


def _check_hyperbolic(output: HeadOutput, name: str = "head.geometry") -> None:
    if output.geometry != "hyperbolic" or output.curvature is None:
        raise must(name, "'hyperbolic' for the hierarchical loss", output.geometry)


# -- the hierarchical loss -------------------------------------------------------------------


class HierarchicalLoss(nn.Module):
    """HITA (with margins and HNSA) + ``lambda_1`` L_vic + ``lambda_2`` L_gap (METHOD.md).

    Args:
        layout: the head's node layout (every tree of the classifier).
        settings: the loss settings; default :class:`HierarchicalSettings`.
        trees: the trees to align with, in order; default every tree of ``layout``.

    ``forward`` returns:

    - ``hita_loss``: per tree ``sum_l w_l CE_l``, summed (or averaged) over the trees. ``CE_l``
      is the cross-entropy of level ``l`` over logits ``-d_r / tau``, the target logit lowered by
      ``m_l / tau`` (margins) and the HNSA negatives added to the denominator;
    - ``vic_loss``: ``lambda_1 mean(relu(d_r(image, text[leaf label]) - zeta_vic))``, once (it
      depends on the leaf level only);
    - ``gap_loss``: ``lambda_2 (label gap + intra gap)`` on the text embeddings of every node of
      the selected trees, per tree, summed (or averaged) over the trees;
    - diagnostics (detached): ``hita/{tree}/{level}`` (unweighted CE), ``text_norm/{tree}/{level}``
      (mean text norm), ``margin/{tree}/{level}`` (when margins are on), ``leaf_distance``,
      ``image_norm``, ``label_gap`` and ``intra_gap`` (unweighted).

    Pairs of nodes with the same display name get the same prompt, hence the same text
    embedding, so no norm order can hold between them; the gap terms skip them. This drops the
    edge from a shallow leaf to its own copy one level up (tree padding).

    The index tables of :mod:`trainables.loss_tables` are held as (non-persistent) buffers,
    so one call scores every ``(tree, level)`` at once. The HypAvg embeddings of all trees are
    built in one Einstein-midpoint pass per level and scored against every node in one distance
    call. This is the same cross-entropy as the per-level HNSA cross-entropy with HypAvg queries,
    per ``(tree, level)`` (the references in the tests compute it so).
    """

    needs = frozenset({"adversarial"})

    def __init__(
        self,
        layout: HeadLayout,
        settings: HierarchicalSettings | None = None,
        trees: Sequence[str] | None = None,
    ):
        super().__init__()
        self.layout = layout
        self.settings = settings if settings is not None else HierarchicalSettings()
        if not isinstance(self.settings, HierarchicalSettings):
            raise must("settings", "a HierarchicalSettings", type(self.settings).__name__)
        known = layout.tree_names
        if trees is None:
            trees = known
        trees = (trees,) if isinstance(trees, str) else tuple(trees)
        if not trees:
            raise must("trees", f"at least one of {list(known)}", "<no trees>")
        for tree in trees:
            if tree not in known:
                raise must("trees", f"names of trees in {list(known)}", tree)
        if len(set(trees)) != len(trees):
            raise must("trees", "distinct tree names", list(trees))
        self.trees = trees
        self.depths = tuple(layout.depth(tree) for tree in trees)
        self.leaf_slice = layout.slice_of(trees[0], 0)
        tables = build_loss_tables(layout, trees, self.settings)
        self.keys = tables.keys
        self._image_keys = tables.image_keys
        self._hypavg_steps = tables.hypavg_steps
        self._hypavg_keys = tables.hypavg_keys
        for name, value in tables.tensors.items():
            self.register_buffer(f"_table_{name}", value, persistent=False)

    def _follow(self, output: HeadOutput) -> None:
        """Move the precomputed buffers to the outputs' device (once), if the caller did not."""
        device = output.image.device
        if self._table("slot_column").device != device:
            self.to(device)

    def _table(self, name: str) -> torch.Tensor:
        return getattr(self, f"_table_{name}")

    # -- HITA --------------------------------------------------------------------------------

    def _key_norms(self, text: torch.Tensor) -> torch.Tensor:
        """``[K]`` mean text-embedding norm of every key's level (detached)."""
        norms = torch.linalg.vector_norm(text.detach().float(), dim=-1)
        return self._level_means(norms)

    def _level_means(self, norms: torch.Tensor) -> torch.Tensor:
        """``[K]`` mean of ``norms [N]`` over the nodes of every key's level."""
        return (self._table("level_member") * norms).sum(dim=-1) / self._table("level_size")

    def _margins(
        self, output: HeadOutput, epoch: float, key_norms: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """``[K]`` margin of every key (detached), or None when margins are off."""
        schedule = self.settings.margins
        if not schedule.enabled:
            schedule.warmup(epoch)  # still reject a bad epoch
            return None
        device = output.text.device
        if schedule.shape != "theorem":
            margins = [level_margins(schedule, depth, epoch=epoch) for depth in self.depths]
            return torch.cat(margins).to(device)
        if key_norms is None:
            key_norms = self._key_norms(output.text)
        # The theorem margin of a level depends on its mean norm only, so one call covers all.
        margins = level_margins(
            schedule,
            len(self.keys) - 1,
            epoch=epoch,
            level_norms=key_norms,
            curvature=output.curvature,
        )
        return margins.to(device)

    def _hypavg(self, image: torch.Tensor, labels: torch.Tensor, r) -> tuple:
        """HypAvg embeddings ``[H, D]`` of every superclass row and their presence ``[H]``."""
        leaves = level_size(self.layout, self.trees[0], 0)
        weights = self._table("ancestry")[labels].any(dim=0).float()  # [P]: any image below
        level = geometry.einstein_midpoint(image, labels, leaves, r)
        blocks = []
        for step, (size, identity) in enumerate(self._hypavg_steps):
            rows = level if identity else level[self._table(f"step_rows_{step}")]
            level = geometry.einstein_midpoint(
                rows,
                self._table(f"step_groups_{step}"),
                size,
                r,
                weights=weights[self._table(f"step_weights_{step}")],
            )
            blocks.append(level)
        return torch.cat(blocks), weights[leaves:]

    def _source_cross_entropies(
        self,
        source: HeadOutput,
        labels: torch.Tensor,
        margins: torch.Tensor | None,
        subset: set[int] | None = None,
    ) -> torch.Tensor:
        """``[K]`` cross-entropy of every key scored on ``source`` (only ``subset``'s keys when
        given; the others are 0)."""
        tau = source.temperature
        logits, slots, weights = [], [], []
        image_slots = self._table("image_slots")
        if subset is not None:
            kept = [i for i, key in enumerate(self._image_keys) if key in subset]
            image_slots = image_slots[torch.tensor(kept, dtype=torch.long, device=labels.device)]
        if len(image_slots):
            logits.append(source.logits.repeat(len(image_slots), 1))
            slots.append(image_slots[:, labels].reshape(-1))
            weights.append(torch.ones(slots[-1].shape, device=labels.device))
        hypavg_rows = None
        if subset is not None:
            kept = [i for i, key in enumerate(self._hypavg_keys) if key in subset]
            if len(kept) < len(self._hypavg_keys):
                hypavg_rows = torch.tensor(kept, dtype=torch.long, device=labels.device)
        if self._hypavg_keys and (hypavg_rows is None or len(hypavg_rows)):
            queries, present = self._hypavg(source.image, labels, source.curvature)
            hypavg_slots = self._table("hypavg_slots")
            if hypavg_rows is not None:
                queries, present = queries[hypavg_rows], present[hypavg_rows]
                hypavg_slots = hypavg_slots[hypavg_rows]
            distances = geometry.pairwise_distance(queries, source.text, source.curvature)
            logits.append(-distances / tau)
            slots.append(hypavg_slots)
            weights.append(present)
        logits, slots = torch.cat(logits), torch.cat(slots)
        columns = self._table("slot_column")[slots]
        keys = self._table("slot_key")[slots]
        if margins is not None:
            # Lower each row's target logit by m / tau (apply_margin).
            shift = (margins[keys] / tau).to(logits.dtype)
            logits = logits.scatter_add(1, columns[:, None], -shift[:, None])
        masked = logits.masked_fill(self._table("slot_blocked")[slots], float("-inf"))
        ce = F.cross_entropy(masked, columns, reduction="none")
        weights = torch.cat(weights).to(ce.dtype)
        # Leaf rows average over the batch; HypAvg rows over the superclasses present in it.
        total = ce.new_zeros(len(self.keys)).index_add(0, keys, ce * weights)
        count = ce.new_zeros(len(self.keys)).index_add(0, keys, weights)
        return total / count.clamp_min(1)

    def _check_inputs(self, output: HeadOutput, by_level) -> None:
        _check_hyperbolic(output)
        self._follow(output)
        if by_level is not None:
            missing = [key for key in self.keys if key not in by_level]
            if missing:
                raise must("by_level", "a head output for every (tree, level)", missing[0])
            for source in by_level.values():
                _check_hyperbolic(source)

    def _cross_entropies(
        self,
        output: HeadOutput,
        labels: torch.Tensor,
        epoch: float,
        by_level: Mapping[tuple[str, int], HeadOutput] | None,
        key_norms: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``([K] cross-entropies in key order, [K] margins or None)``."""
        margins = self._margins(output, epoch, key_norms)
        if by_level is None:
            return self._source_cross_entropies(output, labels, margins), margins
        # One pass per distinct head output, over the keys it scores.
        sources: dict[int, tuple[HeadOutput, set[int]]] = {}
        for key, name in enumerate(self.keys):
            source = by_level[name]
            sources.setdefault(id(source), (source, set()))[1].add(key)
        total = None
        for source, subset in sources.values():
            subset = None if len(subset) == len(self.keys) else subset
            part = self._source_cross_entropies(source, labels, margins, subset)
            total = part if total is None else total + part
        return total, margins

    def level_cross_entropies(
        self,
        output: HeadOutput,
        labels: torch.Tensor,
        *,
        epoch: float = 0.0,
        by_level: Mapping[tuple[str, int], HeadOutput] | None = None,
    ) -> dict[tuple[str, int], torch.Tensor]:
        """The unweighted cross-entropy ``CE_l`` of every ``(tree, level)`` of the loss.

        Margins and HNSA negatives are included. With ``by_level`` (one perturbation per level),
        ``(tree, level)`` is scored on ``by_level[(tree, level)]``'s images.

        Args:
            output: hyperbolic head output on the (adversarial) images.
            labels: LongTensor ``[B]`` of leaf labels.
            epoch: the fractional epoch (margin warm-up).
            by_level: optional head output per ``(tree, level)``, sharing ``output``'s text.

        Returns:
            ``{(tree, level): 0-dim tensor}`` for every selected tree and level ``0..L``.
        """
        self._check_inputs(output, by_level)
        ces, _ = self._cross_entropies(output, labels, epoch, by_level)
        return dict(zip(self.keys, ces.unbind(), strict=True))

    def _weighted(self, ces: torch.Tensor) -> torch.Tensor:
        """``sum_l w_l CE_l`` of the ``[K]`` cross-entropies in key order, reduced over the
        trees (sum or mean)."""
        total = (ces * self._table("level_weight")).sum()
        if self.settings.forest_reduction == "mean":
            return total / len(self.trees)
        return total

    def hita(
        self,
        output: HeadOutput,
        labels: torch.Tensor,
        *,
        epoch: float = 0.0,
        by_level: Mapping[tuple[str, int], HeadOutput] | None = None,
    ) -> torch.Tensor:
        """The HITA term alone: the weighted level cross-entropies, reduced over the trees."""
        self._check_inputs(output, by_level)
        ces, _ = self._cross_entropies(output, labels, epoch, by_level)
        return self._weighted(ces)

    def hita_objective(self, *, epoch: float = 0.0) -> Objective:
        """``objective(output, labels) -> scalar``: the HITA term, for an attack to maximise.

        The universal training attack maximises this weighted sum over every level of every
        tree (margins and negatives included, as in training).
        """

        def objective(output: HeadOutput, labels: torch.Tensor) -> torch.Tensor:
            return self.hita(output, labels, epoch=epoch)

        return objective

    # -- the whole loss ----------------------------------------------------------------------

    def forward(
        self,
        adversarial: HeadOutput,
        labels: torch.Tensor,
        *,
        epoch: float = 0.0,
        by_level: Mapping[tuple[str, int], HeadOutput] | None = None,
    ) -> dict[str, torch.Tensor]:
        """All terms of the loss (see the class docstring for the keys).

        Args:
            adversarial: hyperbolic head output on the adversarial images (with the text
                perturbation, if any); its leaf embeddings enter L_vic, its text L_gap.
            labels: LongTensor ``[B]`` of leaf labels.
            epoch: the fractional epoch (margin warm-up).
            by_level: optional head output per ``(tree, level)`` (per-level perturbations).
        """
        settings = self.settings
        self._check_inputs(adversarial, by_level)
        r = adversarial.curvature
        text = adversarial.text
        norms = torch.linalg.vector_norm(text.float(), dim=-1)
        key_norms = self._level_means(norms.detach())
        ces, margins = self._cross_entropies(adversarial, labels, epoch, by_level, key_norms)
        leaf_text = text[self.leaf_slice][labels]
        leaf_distance = geometry.distance(adversarial.image, leaf_text, r)
        vic = F.relu(leaf_distance - settings.vic_radius).mean()

        # label_gap and intra_gap of every tree: per group, the mean over its pairs.
        gaps = F.relu(
            norms[self._table("gap_upper")] - norms[self._table("gap_lower")] + settings.gap_margin
        )
        per_group = norms.new_zeros(2 * len(self.trees)).index_add(
            0, self._table("gap_group"), gaps
        )
        label_total, intra_total = (per_group / self._table("gap_count")).view(2, -1).sum(dim=1)
        if settings.forest_reduction == "mean":
            label_total, intra_total = label_total / len(self.trees), intra_total / len(self.trees)

        terms: dict[str, torch.Tensor] = {
            "hita_loss": self._weighted(ces),
            "vic_loss": settings.vic_weight * vic,
            "gap_loss": settings.gap_weight * (label_total + intra_total),
        }
        for (tree, level), ce in zip(self.keys, ces.detach().unbind(), strict=True):
            terms[f"hita/{tree}/{level}"] = ce
        margin_values = [None] * len(self.keys) if margins is None else margins.detach().unbind()
        for (tree, level), norm, margin in zip(
            self.keys, key_norms.unbind(), margin_values, strict=True
        ):
            terms[f"text_norm/{tree}/{level}"] = norm
            if margin is not None:
                terms[f"margin/{tree}/{level}"] = margin
        terms["leaf_distance"] = leaf_distance.detach().mean()
        terms["image_norm"] = torch.linalg.vector_norm(adversarial.image.detach(), dim=-1).mean()
        terms["label_gap"] = label_total.detach()
        terms["intra_gap"] = intra_total.detach()
        return terms
