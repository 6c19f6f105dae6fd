"""Independent references for the hierarchical loss's terms, written per level and per pair as
METHOD.md states them; :class:`trainables.losses.HierarchicalLoss` computes the same terms from
precomputed tables, and the tests check the two agree."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from trainables import geometry
from trainables.errors import must


def hypavg_pyramid(
    image: torch.Tensor,
    labels: torch.Tensor,
    parents: Sequence[torch.Tensor],
    sizes: Sequence[int],
    r: float | torch.Tensor,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """HypAvg embeddings of every node of every level, from a batch of image embeddings.

    Level 0: the Einstein midpoint of the batch's images of each leaf class. Level ``l + 1``: the
    Einstein midpoint of the level-``l`` midpoints of each node's children present in the batch,
    one uniform weight per child group. Absent nodes get the origin and weight 0 above.

    Args:
        image: ``[B, D]`` image embeddings in the ball of curvature ``-r``.
        labels: LongTensor ``[B]``, leaf labels in ``[0, sizes[0])``.
        parents: for ``l = 0..L-1``, LongTensor ``[n_l]``: the parent (level-``l + 1`` index)
            of each level-``l`` node.
        sizes: ``[n_0, ..., n_L]``, the number of nodes of each level.
        r: curvature magnitude (> 0).

    Returns:
        For ``l = 0..L``, ``(midpoints [n_l, D], present [n_l] bool)``: the HypAvg embedding of
        each level-``l`` node and whether any batch image lies under it.
    """
    if len(sizes) != len(parents) + 1:
        raise must("sizes", f"{len(parents) + 1} level sizes, one more than parent maps", sizes)
    midpoints = geometry.einstein_midpoint(image, labels, sizes[0], r)
    counts = torch.zeros(sizes[0], device=image.device).index_add(
        0, labels, torch.ones(labels.shape, device=image.device)
    )
    pyramid = [(midpoints, counts > 0)]
    for parent, size in zip(parents, sizes[1:], strict=True):
        weights = (counts > 0).to(midpoints.dtype)
        midpoints = geometry.einstein_midpoint(midpoints, parent, size, r, weights=weights)
        counts = torch.zeros(size, device=image.device).index_add(0, parent, weights.float())
        pyramid.append((midpoints, counts > 0))
    return pyramid


def hnsa_cross_entropy(
    logits: torch.Tensor,
    targets: torch.Tensor,
    negatives: Sequence[tuple[torch.Tensor, torch.Tensor]] = (),
) -> torch.Tensor:
    """Per-row cross-entropy with extra negatives in the softmax denominator.

    ``CE_i = -logits[i, t_i] + log(sum_c exp(logits[i, c]) + sum_k allowed[i, k] exp(extra[i, k]))``

    Args:
        logits: ``[Q, C]`` logits of the level's own nodes (margins already applied).
        targets: LongTensor ``[Q]``, target columns of ``logits``.
        negatives: pairs ``(extra [Q, K], allowed [Q, K] bool)``: logits of other nodes and
            which of them count as negatives for each row.

    Returns:
        ``[Q]`` cross-entropies, >= the plain cross-entropy of ``logits`` (equal without
        negatives).
    """
    blocks = [logits]
    for extra, allowed in negatives:
        # -inf: a masked node adds exp(-inf) = 0 to the denominator and gets no gradient.
        blocks.append(extra.to(logits.dtype).masked_fill(~allowed, float("-inf")))
    return F.cross_entropy(torch.cat(blocks, dim=1), targets, reduction="none")


def label_gap(
    norms: torch.Tensor, children: torch.Tensor, parents: torch.Tensor, zeta: float
) -> torch.Tensor:
    """``mean(relu(|parent| - |child| + zeta))`` over (child, parent) pairs; 0 without pairs.

    Args:
        norms: ``[N]`` norms of the text embeddings of every node.
        children, parents: LongTensors ``[P]`` of node indices, one entry per path edge.
        zeta: the required gap ``zeta_gap`` (>= 0).
    """
    if children.numel() == 0:
        return norms.new_zeros(())
    return F.relu(norms[parents] - norms[children] + zeta).mean()


def intra_gap(
    child_norms: Sequence[torch.Tensor],
    parent_norms: Sequence[torch.Tensor],
    masks: Sequence[torch.Tensor],
    zeta: float,
) -> torch.Tensor:
    """``mean(relu(|v| - |u| + zeta))`` over all pairs of nodes ``u`` at level ``l``, ``v`` at
    ``l + 1``, pooled over the adjacent level pairs; 0 without pairs.

    Args:
        child_norms: per level pair, ``[n_l]`` norms of the lower level's nodes.
        parent_norms: per level pair, ``[n_{l+1}]`` norms of the upper level's nodes.
        masks: per level pair, ``[n_l, n_{l+1}]`` bool: which pairs count.
        zeta: the required gap ``zeta_gap`` (>= 0).
    """
    total = count = None
    for lower, upper, mask in zip(child_norms, parent_norms, masks, strict=True):
        gaps = F.relu(upper[None, :] - lower[:, None] + zeta)
        term, pairs = (gaps * mask).sum(), mask.sum()
        total = term if total is None else total + term
        count = pairs if count is None else count + pairs
    if total is None:
        return torch.zeros(())
    # Floor the count: with every pair masked out the sum is 0, and so is the gap.
    return total / count.clamp_min(1)
