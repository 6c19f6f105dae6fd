"""The index tables of the hierarchical loss, built once from the head's layout.

They let :class:`~trainables.losses.HierarchicalLoss` score every ``(tree, level)`` in one pass:
each *row* of its logits is one query (an image of the batch, or the HypAvg embedding of one
superclass) for one ``(tree, level)`` *key*, and its *slot* ``(key, target node)`` selects the
target column and the columns of its softmax (the key's own level plus the allowed HNSA
negatives) among the logits of every node.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from trainables.head import HeadLayout
from trainables.loss_settings import HierarchicalSettings
from trainables.margins import level_weights


@dataclass(frozen=True)
class TreeEdges:
    """The parent-child structure of one tree of the loss, in the layout's node numbering.

    Per level ``l``: ``target[l] [n_0]`` the level-``l`` node of every leaf; ``parent[l]
    [n_l]`` the level-``l + 1`` parent of every level-``l`` node; ``not_up[l] [n_l, n_{l+1}]``
    and ``not_down[l + 1] [n_{l+1}, n_l]`` True where two nodes share no edge (the HNSA
    negatives); ``intra[l] [n_l, n_{l+1}]`` True where two nodes have different display names.
    ``label_child``/``label_parent``: every (child, parent) edge below a leaf, between nodes of
    different display names, as global node indices (the label gap's pairs).
    """

    target: list[torch.Tensor]
    parent: list[torch.Tensor]
    not_up: list[torch.Tensor]
    not_down: dict[int, torch.Tensor]
    intra: list[torch.Tensor]
    label_child: torch.Tensor
    label_parent: torch.Tensor


@dataclass(frozen=True)
class LossTables:
    """Everything the loss precomputes: ``keys`` (every ``(tree, level)`` in order), the first
    slot of each key, the keys scored on the images themselves, the HypAvg steps
    (``(size, identity)`` per level above the leaves) and keys of the HypAvg rows, and the named
    tensors (held by the loss as non-persistent buffers, so they follow its device)."""

    keys: tuple[tuple[str, int], ...]
    slot_start: tuple[int, ...]
    image_keys: tuple[int, ...]
    hypavg_steps: tuple[tuple[int, bool], ...]
    hypavg_keys: tuple[int, ...]
    tensors: dict[str, torch.Tensor]


def level_size(layout: HeadLayout, tree: str, level: int) -> int:
    """The number of nodes of ``tree``'s level ``level``."""
    node_slice = layout.slice_of(tree, level)
    return node_slice.stop - node_slice.start


def display_name_ids(layout: HeadLayout) -> torch.Tensor:
    """``[N]``: every node's display name as a number (nodes of one name share it)."""
    name_ids: dict[str, int] = {}
    return torch.tensor([name_ids.setdefault(name, len(name_ids)) for name in layout.names])


def tree_edges(layout: HeadLayout, tree: str, node_names: torch.Tensor) -> TreeEdges:
    """The structure of ``tree``; ``node_names`` is :func:`display_name_ids` of ``layout``."""
    depth = layout.depth(tree)
    sizes = [level_size(layout, tree, level) for level in range(depth + 1)]
    starts = [layout.slice_of(tree, level).start for level in range(depth + 1)]
    targets = [layout.targets[(tree, level)].long() for level in range(depth + 1)]
    parents, not_up, not_down, intra = [], [], {}, []
    label_children, label_parents = (
        [torch.empty(0, dtype=torch.long)],
        [torch.empty(0, dtype=torch.long)],
    )
    for level in range(depth):
        # Every level-l node has leaves below it; all of them share its one parent.
        parent = torch.empty(sizes[level], dtype=torch.long)
        parent[targets[level]] = targets[level + 1]
        parents.append(parent)
        is_edge = F.one_hot(parent, sizes[level + 1]).bool()  # [n_l, n_{l+1}]
        not_up.append(~is_edge)
        not_down[level + 1] = ~is_edge.T
        lower = node_names[starts[level] : starts[level] + sizes[level]]
        upper = node_names[starts[level + 1] : starts[level + 1] + sizes[level + 1]]
        intra.append(lower[:, None] != upper[None, :])
        children = targets[level] + starts[level]
        above = targets[level + 1] + starts[level + 1]
        distinct = node_names[children] != node_names[above]
        label_children.append(children[distinct])
        label_parents.append(above[distinct])
    return TreeEdges(
        targets,
        parents,
        not_up,
        not_down,
        intra,
        torch.cat(label_children),
        torch.cat(label_parents),
    )


def build_loss_tables(
    layout: HeadLayout, trees: Sequence[str], settings: HierarchicalSettings
) -> LossTables:
    """The tables of the loss over ``trees`` (names of ``layout``'s trees, in order)."""
    node_names = display_name_ids(layout)
    edges = [tree_edges(layout, tree, node_names) for tree in trees]
    depths = [layout.depth(tree) for tree in trees]
    tensors: dict[str, torch.Tensor] = {}
    keys, slot_start, image_keys = _level_tables(layout, trees, depths, edges, settings, tensors)
    steps, hypavg_keys = (), ()
    if settings.superclass_images == "hypavg" and max(depths) > 0:
        steps, hypavg_keys = _hypavg_tables(layout, trees, depths, edges, keys, slot_start, tensors)
    _gap_tables(layout, trees, depths, edges, tensors)
    return LossTables(keys, slot_start, image_keys, steps, hypavg_keys, tensors)


def _level_tables(layout, trees, depths, edges, settings, tensors):
    """Keys (every ``(tree, level)``), slots (key, node) and the image rows' slots.

    - ``slot_column [S]``: the node (logit column) of each slot;
    - ``slot_key [S]``: its key;
    - ``slot_blocked [S, N]``: the columns outside its softmax (not its own level, nor an
      allowed HNSA negative);
    - ``level_member [K, N]``: 1 on the nodes of each key's level, ``level_size [K]`` their
      number (mean text norms);
    - ``level_weight [K]``: the HITA weight ``w_l`` of each key;
    - ``image_slots [K_img, n_0]``: per key scored on the images themselves (the leaves; every
      level for ``superclass_images="image"``), the slot of each leaf label.
    """
    keys = tuple(
        (tree, level)
        for tree, depth in zip(trees, depths, strict=True)
        for level in range(depth + 1)
    )
    slot_start, total = [], 0
    for tree, level in keys:
        slot_start.append(total)
        total += level_size(layout, tree, level)
    blocked = torch.ones(total, layout.num_nodes, dtype=torch.bool)
    column = torch.empty(total, dtype=torch.long)
    slot_key = torch.empty(total, dtype=torch.long)
    level_member = torch.zeros(len(keys), layout.num_nodes)
    weights = []
    image_keys, image_slots = [], []
    for key, (tree, level) in enumerate(keys):
        index = trees.index(tree)
        depth = depths[index]
        own = layout.slice_of(tree, level)
        rows = slice(slot_start[key], slot_start[key] + own.stop - own.start)
        column[rows] = torch.arange(own.start, own.stop)
        slot_key[rows] = key
        blocked[rows, own] = False
        # -inf logits outside: a masked node adds exp(-inf) = 0 and gets no gradient.
        if settings.negatives_up and level < depth:
            blocked[rows, layout.slice_of(tree, level + 1)] = ~edges[index].not_up[level]
        if settings.negatives_down and level > 0:
            blocked[rows, layout.slice_of(tree, level - 1)] = ~edges[index].not_down[level]
        level_member[key, own] = 1.0
        weights.append(level_weights(depth, settings.level_weights)[level])
        if level == 0 or settings.superclass_images == "image":
            image_keys.append(key)
            image_slots.append(slot_start[key] + edges[index].target[level])
    tensors["slot_column"] = column
    tensors["slot_key"] = slot_key
    tensors["slot_blocked"] = blocked
    tensors["level_member"] = level_member
    tensors["level_size"] = level_member.sum(dim=-1)
    tensors["level_weight"] = torch.tensor(weights, dtype=torch.float32)
    tensors["image_slots"] = torch.stack(image_slots)
    return keys, tuple(slot_start), tuple(image_keys)


def _hypavg_tables(layout, trees, depths, edges, keys, slot_start, tensors):
    """The batched HypAvg pyramid of every tree (``superclass_images="hypavg"``).

    Level 0 (the leaf midpoints) is shared by every tree. Level ``l >= 1`` is one block ``M_l``:
    the level-``l`` nodes of every tree of depth ``>= l``, in tree order. Step ``l`` builds
    ``M_l`` from ``M_{l-1}`` in one :func:`geometry.einstein_midpoint` call (``step_rows_l``:
    the rows of ``M_{l-1}`` taken, ``step_groups_l``: their parent in ``M_l``,
    ``step_weights_l``: their position in the pyramid for the presence weight). The pyramid is
    ``[level 0, M_1, ..., M_L]``; ``ancestry [n_0, P]`` marks the nodes above each leaf, and the
    HypAvg rows (``M_1..M_L``) have slots ``hypavg_slots``.
    """
    leaves = level_size(layout, trees[0], 0)
    key_of = {key: k for k, key in enumerate(keys)}
    # offsets[l][index]: where tree ``index``'s level-l nodes start in M_l (0 for level 0).
    offsets: list[dict[int, int]] = [dict.fromkeys(range(len(trees)), 0)]
    block_start = [0]  # where M_l starts in the pyramid
    block_size = [leaves]
    steps, hypavg_slots, hypavg_keys, above = [], [], [], []
    for level in range(1, max(depths) + 1):
        members = [i for i, depth in enumerate(depths) if depth >= level]
        offset, rows, groups, positions, size = {}, [], [], [], 0
        for index in members:
            tree = trees[index]
            nodes = level_size(layout, tree, level)
            offset[index] = size
            size += nodes
            below = torch.arange(level_size(layout, tree, level - 1)) + offsets[-1][index]
            rows.append(below)
            groups.append(edges[index].parent[level - 1] + offset[index])
            positions.append(below + block_start[-1])
            key = key_of[(tree, level)]
            hypavg_slots.append(torch.arange(nodes) + slot_start[key])
            hypavg_keys.extend([key] * nodes)
            above.append((level, index, edges[index].target[level]))
        rows = torch.cat(rows)
        identity = len(rows) == block_size[-1] and bool((rows == torch.arange(len(rows))).all())
        step = len(steps)
        tensors[f"step_rows_{step}"] = rows
        tensors[f"step_groups_{step}"] = torch.cat(groups)
        tensors[f"step_weights_{step}"] = torch.cat(positions)
        steps.append((size, identity))
        offsets.append(offset)
        block_start.append(block_start[-1] + block_size[-1])
        block_size.append(size)
    ancestry = torch.zeros(leaves, block_start[-1] + block_size[-1], dtype=torch.bool)
    ancestry[:, :leaves] = torch.eye(leaves, dtype=torch.bool)
    for level, index, targets in above:
        start = block_start[level] + offsets[level][index]
        ancestry[torch.arange(leaves), start + targets] = True
    tensors["ancestry"] = ancestry
    tensors["hypavg_slots"] = torch.cat(hypavg_slots)
    return tuple(steps), tuple(hypavg_keys)


def _gap_tables(layout, trees, depths, edges, tensors) -> None:
    """Every (lower, upper) pair of the gap terms, grouped: tree ``t``'s label pairs in group
    ``t``, its intra pairs (where ``intra`` holds) in group ``T + t``."""
    lower, upper, group = [], [], []
    count = torch.zeros(2 * len(trees))
    for index, (tree, depth) in enumerate(zip(trees, depths, strict=True)):
        children = edges[index].label_child
        lower.append(children)
        upper.append(edges[index].label_parent)
        group.append(torch.full_like(children, index))
        count[index] = len(children)
        for level in range(depth):
            pairs = edges[index].intra[level].nonzero()
            lower.append(pairs[:, 0] + layout.slice_of(tree, level).start)
            upper.append(pairs[:, 1] + layout.slice_of(tree, level + 1).start)
            group.append(torch.full_like(pairs[:, 0], len(trees) + index))
            count[len(trees) + index] += len(pairs)
    tensors["gap_lower"] = torch.cat(lower)
    tensors["gap_upper"] = torch.cat(upper)
    tensors["gap_group"] = torch.cat(group)
    # Floor the count: a group without pairs sums to 0, and so is its gap.
    tensors["gap_count"] = count.clamp_min(1)
