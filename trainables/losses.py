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
:func:`trainables.margins.level_weights`, shared with the universal attack's objective.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from trainables import geometry
from trainables.errors import must
from trainables.margins import LEVEL_WEIGHTS, MarginSchedule, level_margins, level_weights
from trainables.model import HeadLayout, HeadOutput
from trainables.numbers import is_finite_number

__all__ = [
    "HierarchicalLoss",
    "HierarchicalSettings",
    "Objective",
]

SUPERCLASS_IMAGES = ("hypavg", "image")
NEGATIVES = ("none", "up", "down", "both")
FOREST_REDUCTIONS = ("sum", "mean")

Objective = Callable[[HeadOutput, torch.Tensor], torch.Tensor]


def _check_choice(name: str, value, choices: Sequence[str]) -> None:
    if value not in choices:
        raise must(name, f"one of {list(choices)}", value)


def _check_non_negative(name: str, value) -> None:
    if not (is_finite_number(value) and value >= 0):
        raise must(name, "a finite number >= 0", value)


# -- settings --------------------------------------------------------------------------------


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

    Edge masks, parent maps and the tables below are precomputed as (non-persistent) buffers,
    so one call scores every ``(tree, level)`` at once: each *row* is one query (an image of the
    batch, or the HypAvg embedding of one superclass) for one ``(tree, level)`` *key*, and its
    *slot* ``(key, target node)`` selects the target column and the columns of its softmax (the
    key's own level plus the allowed HNSA negatives) in the ``[rows, nodes]`` logits of every
    node. The HypAvg embeddings of all trees are built in one Einstein-midpoint pass per level
    and scored against every node in one distance call. This is the same cross-entropy as
    :func:`hnsa_cross_entropy` on the level's logits with :func:`hypavg_pyramid` queries, per
    ``(tree, level)``.
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
        name_ids: dict[str, int] = {}
        node_names = torch.tensor([name_ids.setdefault(n, len(name_ids)) for n in layout.names])
        for index, tree in enumerate(trees):
            depth = self.depths[index]
            sizes = [self._size(tree, level) for level in range(depth + 1)]
            targets = [layout.targets[(tree, level)].long() for level in range(depth + 1)]
            starts = [layout.slice_of(tree, level).start for level in range(depth + 1)]
            label_children, label_parents = [], []
            for level in range(depth + 1):
                self._buffer("target", index, level, targets[level])
            for level in range(depth):
                # Every level-l node has leaves below it; all of them share its one parent.
                parent = torch.empty(sizes[level], dtype=torch.long)
                parent[targets[level]] = targets[level + 1]
                self._buffer("parent", index, level, parent)
                is_edge = F.one_hot(parent, sizes[level + 1]).bool()  # [n_l, n_{l+1}]
                self._buffer("up", index, level, ~is_edge)
                self._buffer("down", index, level + 1, ~is_edge.T)
                lower = node_names[starts[level] : starts[level] + sizes[level]]
                upper = node_names[starts[level + 1] : starts[level + 1] + sizes[level + 1]]
                self._buffer("intra", index, level, lower[:, None] != upper[None, :])
                children = targets[level] + starts[level]
                parents = targets[level + 1] + starts[level + 1]
                distinct = node_names[children] != node_names[parents]
                label_children.append(children[distinct])
                label_parents.append(parents[distinct])
            empty = torch.empty(0, dtype=torch.long)
            self._buffer("label_child", index, None, torch.cat([empty, *label_children]))
            self._buffer("label_parent", index, None, torch.cat([empty, *label_parents]))
        self._build_level_tables()
        self._build_hypavg_tables()
        self._build_gap_tables()

    # -- buffers ---------------------------------------------------------------------------

    def _size(self, tree: str, level: int) -> int:
        node_slice = self.layout.slice_of(tree, level)
        return node_slice.stop - node_slice.start

    def _follow(self, output: HeadOutput) -> None:
        """Move the precomputed buffers to the outputs' device (once), if the caller did not."""
        device = output.image.device
        if self._buffer("target", 0, 0).device != device:
            self.to(device)

    def _buffer(self, kind: str, tree: int, level: int | None, value: torch.Tensor | None = None):
        name = f"_{kind}_{tree}" + ("" if level is None else f"_{level}")
        if value is not None:
            self.register_buffer(name, value, persistent=False)
        return getattr(self, name)

    def _table(self, name: str, value: torch.Tensor | None = None) -> torch.Tensor:
        if value is not None:
            self.register_buffer(f"_table_{name}", value, persistent=False)
        return getattr(self, f"_table_{name}")

    def _build_level_tables(self) -> None:
        """Keys (every ``(tree, level)``), slots (key, node) and the image rows' slots.

        - ``slot_column [S]``: the node (logit column) of each slot;
        - ``slot_key [S]``: its key;
        - ``slot_blocked [S, N]``: the columns outside its softmax (not its own level, nor an
          allowed HNSA negative);
        - ``level_member [K, N]``: 1 on the nodes of each key's level, ``level_size [K]``
          their number (mean text norms);
        - ``level_weight [K]``: the HITA weight ``w_l`` of each key;
        - ``image_slots [K_img, n_0]``: per key scored on the images themselves (the leaves;
          every level for ``superclass_images="image"``), the slot of each leaf label.
        """
        layout, settings = self.layout, self.settings
        self.keys = tuple(
            (tree, level)
            for tree, depth in zip(self.trees, self.depths, strict=True)
            for level in range(depth + 1)
        )
        slot_start, total = [], 0
        for tree, level in self.keys:
            slot_start.append(total)
            total += self._size(tree, level)
        self._slot_start = tuple(slot_start)
        blocked = torch.ones(total, layout.num_nodes, dtype=torch.bool)
        column = torch.empty(total, dtype=torch.long)
        slot_key = torch.empty(total, dtype=torch.long)
        level_member = torch.zeros(len(self.keys), layout.num_nodes)
        weights = []
        image_keys, image_slots = [], []
        for key, (tree, level) in enumerate(self.keys):
            index = self.trees.index(tree)
            depth = self.depths[index]
            own = layout.slice_of(tree, level)
            rows = slice(slot_start[key], slot_start[key] + own.stop - own.start)
            column[rows] = torch.arange(own.start, own.stop)
            slot_key[rows] = key
            blocked[rows, own] = False
            # -inf logits outside: a masked node adds exp(-inf) = 0 and gets no gradient.
            if settings.negatives_up and level < depth:
                allowed = self._buffer("up", index, level)
                blocked[rows, layout.slice_of(tree, level + 1)] = ~allowed
            if settings.negatives_down and level > 0:
                allowed = self._buffer("down", index, level)
                blocked[rows, layout.slice_of(tree, level - 1)] = ~allowed
            level_member[key, own] = 1.0
            weights.append(level_weights(depth, settings.level_weights)[level])
            if level == 0 or settings.superclass_images == "image":
                image_keys.append(key)
                image_slots.append(slot_start[key] + self._buffer("target", index, level))
        self._image_keys = tuple(image_keys)
        self._table("slot_column", column)
        self._table("slot_key", slot_key)
        self._table("slot_blocked", blocked)
        self._table("level_member", level_member)
        self._table("level_size", level_member.sum(dim=-1))
        self._table("level_weight", torch.tensor(weights, dtype=torch.float32))
        self._table("image_slots", torch.stack(image_slots))

    def _build_hypavg_tables(self) -> None:
        """The batched HypAvg pyramid of every tree (``superclass_images="hypavg"``).

        Level 0 (the leaf midpoints) is shared by every tree. Level ``l >= 1`` is one block
        ``M_l``: the level-``l`` nodes of every tree of depth ``>= l``, in tree order. Step
        ``l`` builds ``M_l`` from ``M_{l-1}`` in one :func:`geometry.einstein_midpoint` call
        (``step_rows_l``: the rows of ``M_{l-1}`` taken, ``step_groups_l``: their parent in
        ``M_l``, ``step_weights_l``: their position in the pyramid for the presence weight).
        The pyramid is ``[level 0, M_1, ..., M_L]``; ``ancestry [n_0, P]`` marks the nodes above
        each leaf, and the HypAvg rows (``M_1..M_L``) have slots ``hypavg_slots``.
        """
        self._hypavg_steps: tuple[tuple[int, bool], ...] = ()
        self._hypavg_keys: tuple[int, ...] = ()
        if self.settings.superclass_images != "hypavg" or max(self.depths) == 0:
            return
        leaves = self._size(self.trees[0], 0)
        key_of = {key: k for k, key in enumerate(self.keys)}
        # offsets[l][index]: where tree ``index``'s level-l nodes start in M_l (0 for level 0).
        offsets: list[dict[int, int]] = [dict.fromkeys(range(len(self.trees)), 0)]
        block_start = [0]  # where M_l starts in the pyramid
        block_size = [leaves]
        steps, hypavg_slots, hypavg_keys, above = [], [], [], []
        for level in range(1, max(self.depths) + 1):
            members = [i for i, depth in enumerate(self.depths) if depth >= level]
            offset, rows, groups, positions, size = {}, [], [], [], 0
            for index in members:
                tree = self.trees[index]
                offset[index] = size
                size += self._size(tree, level)
                below = torch.arange(self._size(tree, level - 1)) + offsets[-1][index]
                rows.append(below)
                groups.append(self._buffer("parent", index, level - 1) + offset[index])
                positions.append(below + block_start[-1])
                key = key_of[(tree, level)]
                nodes = self._size(tree, level)
                hypavg_slots.append(torch.arange(nodes) + self._slot_start[key])
                hypavg_keys.extend([key] * nodes)
                above.append((level, index, self._buffer("target", index, level)))
            rows = torch.cat(rows)
            identity = len(rows) == block_size[-1] and bool((rows == torch.arange(len(rows))).all())
            step = len(steps)
            self._table(f"step_rows_{step}", rows)
            self._table(f"step_groups_{step}", torch.cat(groups))
            self._table(f"step_weights_{step}", torch.cat(positions))
            steps.append((size, identity))
            offsets.append(offset)
            block_start.append(block_start[-1] + block_size[-1])
            block_size.append(size)
        ancestry = torch.zeros(leaves, block_start[-1] + block_size[-1], dtype=torch.bool)
        ancestry[:, :leaves] = torch.eye(leaves, dtype=torch.bool)
        for level, index, targets in above:
            start = block_start[level] + offsets[level][index]
            ancestry[torch.arange(leaves), start + targets] = True
        self._hypavg_steps = tuple(steps)
        self._hypavg_keys = tuple(hypavg_keys)
        self._table("ancestry", ancestry)
        self._table("hypavg_slots", torch.cat(hypavg_slots))

    def _build_gap_tables(self) -> None:
        """Every (lower, upper) pair of the gap terms, grouped: tree ``t``'s label pairs in group
        ``t``, its intra pairs (where ``intra`` holds) in group ``T + t``."""
        lower, upper, group = [], [], []
        count = torch.zeros(2 * len(self.trees))
        for index, (tree, depth) in enumerate(zip(self.trees, self.depths, strict=True)):
            children = self._buffer("label_child", index, None)
            lower.append(children)
            upper.append(self._buffer("label_parent", index, None))
            group.append(torch.full_like(children, index))
            count[index] = len(children)
            for level in range(depth):
                pairs = self._buffer("intra", index, level).nonzero()
                lower.append(pairs[:, 0] + self.layout.slice_of(tree, level).start)
                upper.append(pairs[:, 1] + self.layout.slice_of(tree, level + 1).start)
                group.append(torch.full_like(pairs[:, 0], len(self.trees) + index))
                count[len(self.trees) + index] += len(pairs)
        self._table("gap_lower", torch.cat(lower))
        self._table("gap_upper", torch.cat(upper))
        self._table("gap_group", torch.cat(group))
        # Floor the count: a group without pairs sums to 0, and so is its gap.
        self._table("gap_count", count.clamp_min(1))

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
        leaves = self._size(self.trees[0], 0)
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
