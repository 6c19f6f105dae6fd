"""Losses: hand-computed values, parity with direct cross-entropies, HNSA, HypAvg, the gap and
visual-in-cone terms, forest reduction, the baselines, gradients and validation."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from tests.trainables.loss_reference import hnsa_cross_entropy, hypavg_pyramid, intra_gap, label_gap
from trainables import geometry
from trainables.baseline_losses import FARELoss, PMGAFTLoss, PMGAFTSettings, TeCoALoss
from trainables.errors import UserInputError
from trainables.head import HeadLayout, HeadOutput
from trainables.hierarchy.tree import ClassTree, Forest
from trainables.loss_tables import display_name_ids, tree_edges
from trainables.losses import HierarchicalLoss, HierarchicalSettings
from trainables.margins import MarginSchedule, apply_margin, level_margins, level_weights

R = 1.0
TAU = 0.5
PLAIN = HierarchicalSettings(superclass_images="image", negatives="none", margins=MarginSchedule())

# The hand tree "first":  a, b -> P;  c -> Q;  d -> R;  P, Q -> X;  R -> Y.
# Layout slots: leaves a b c d = 0..3; first/1: P Q R = 4..6; first/2: X Y = 7..8;
# the tree "second" (a, c -> U; b, d -> V) adds second/1: U V = 9..10.
LEAF, FIRST_1, FIRST_2, SECOND_1 = slice(0, 4), slice(4, 7), slice(7, 9), slice(9, 11)
FIRST_PARENT = {0: [0, 0, 1, 2], 1: [0, 0, 1]}  # level -> parent of each node at that level
FIRST_TARGETS = {0: [0, 1, 2, 3], 1: [0, 0, 1, 2], 2: [0, 0, 0, 1]}  # leaf -> node per level


@pytest.fixture(scope="module")
def hand_layout() -> HeadLayout:
    leaves = ["a", "b", "c", "d"]
    first = ClassTree.from_parents(
        "first",
        {"a": "P", "b": "P", "c": "Q", "d": "R", "P": "X", "Q": "X", "R": "Y"},
        leaves=leaves,
    )
    second = ClassTree.from_parents("second", {"a": "U", "c": "U", "b": "V", "d": "V"})
    layout = HeadLayout.from_forest(Forest([first, second]))
    assert layout.names == tuple("abcdPQRXYUV")
    return layout


def ball(n: int, dim: int = 3, *, seed: int, scale: float = 0.6) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    tangent = torch.randn(n, dim, generator=generator) * scale
    return geometry.project(geometry.exp0(tangent, R), R)


def head(image: torch.Tensor, text: torch.Tensor, *, r: float = R, tau: float = TAU):
    logits = -geometry.pairwise_distance(image, text, r) / tau
    return HeadOutput(
        image=image,
        text=text,
        logits=logits,
        features=image,
        curvature=torch.as_tensor(r),
        temperature=tau,
        geometry="hyperbolic",
    )


def with_norms(directions: torch.Tensor, norms: list[float]) -> torch.Tensor:
    return F.normalize(directions, dim=-1) * torch.tensor(norms)[:, None]


LABELS = torch.tensor([0, 0, 1, 3, 3, 2])


@pytest.fixture()
def hand_output() -> HeadOutput:
    return head(ball(6, seed=1), ball(11, seed=2))


# -- settings ------------------------------------------------------------------------------


def test_default_settings():
    settings = HierarchicalSettings()
    assert settings.level_weights == "linear"
    assert settings.margins == MarginSchedule()  # base 0: the paper's implicit margins
    assert (settings.superclass_images, settings.negatives) == ("hypavg", "both")
    assert (settings.vic_weight, settings.vic_radius) == (1.0, 1.0)
    assert (settings.gap_weight, settings.gap_margin) == (0.1, 0.05)
    assert settings.forest_reduction == "sum"
    assert HierarchicalSettings(margins={"shape": "linear", "base": 0.1}).margins.base == 0.1


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"level_weights": "cubic"}, "loss.level_weights"),
        ({"margins": 0.3}, "loss.margins"),
        ({"margins": {"shape": "cubic"}}, "margins.shape"),
        ({"superclass_images": "mean"}, "loss.superclass_images"),
        ({"negatives": "sideways"}, "loss.negatives"),
        ({"vic_weight": -1.0}, "loss.vic_weight"),
        ({"vic_radius": float("inf")}, "loss.vic_radius"),
        ({"gap_weight": "0.1"}, "loss.gap_weight"),
        ({"gap_margin": -0.05}, "loss.gap_margin"),
        ({"forest_reduction": "max"}, "loss.forest_reduction"),
    ],
)
def test_bad_settings_raise(kwargs, field):
    with pytest.raises(UserInputError, match=f"`{field}` must be"):
        HierarchicalSettings(**kwargs)


def test_bad_pmg_settings_and_trees_raise(hand_layout):
    with pytest.raises(UserInputError, match="`pmg.clean_weight` must be"):
        PMGAFTSettings(clean_weight=-1.0)
    with pytest.raises(UserInputError, match="`trees` must be"):
        HierarchicalLoss(hand_layout, trees=["third"])
    with pytest.raises(UserInputError, match="`trees` must be"):
        HierarchicalLoss(hand_layout, trees=[])


def test_euclidean_head_is_refused(hand_layout, hand_output):
    euclidean = replace(hand_output, geometry="euclidean", curvature=None)
    loss = HierarchicalLoss(hand_layout)
    with pytest.raises(UserInputError, match="`head.geometry` must be 'hyperbolic'"):
        loss(euclidean, LABELS)
    with pytest.raises(UserInputError, match="`head.geometry` must be 'hyperbolic'"):
        loss.hita_objective()(euclidean, LABELS)


# -- HITA ----------------------------------------------------------------------------------


def test_level_weights():
    assert level_weights(2, "linear") == pytest.approx([1, 2 / 3, 1 / 3])
    assert level_weights(2, "uniform") == [1, 1, 1]


def test_hita_matches_direct_cross_entropy_on_hand_sliced_logits(hand_layout, hand_output):
    loss = HierarchicalLoss(hand_layout, PLAIN, trees=["first"])
    terms = loss(hand_output, LABELS)
    logits = hand_output.logits
    levels = [(LEAF, 0), (FIRST_1, 1), (FIRST_2, 2)]
    expected = []
    for node_slice, level in levels:
        targets = torch.tensor(FIRST_TARGETS[level])[LABELS]
        expected.append(F.cross_entropy(logits[:, node_slice], targets))
        torch.testing.assert_close(terms[f"hita/first/{level}"], expected[-1])
    weighted = expected[0] + 2 / 3 * expected[1] + 1 / 3 * expected[2]
    torch.testing.assert_close(terms["hita_loss"], weighted)
    uniform = HierarchicalLoss(hand_layout, replace(PLAIN, level_weights="uniform"), ["first"])
    torch.testing.assert_close(uniform(hand_output, LABELS)["hita_loss"], sum(expected))


def test_hypavg_matches_midpoints_of_present_groups(hand_layout, hand_output):
    settings = replace(PLAIN, superclass_images="hypavg")
    loss = HierarchicalLoss(hand_layout, settings, trees=["first"])
    ces = loss.level_cross_entropies(hand_output, LABELS)
    image, text = hand_output.image, hand_output.text
    # LABELS = a a b d d c: leaf groups a = {0, 1}, b = {2}, c = {5}, d = {3, 4}.
    a = geometry.einstein_midpoint(image[[0, 1]], torch.tensor([0, 0]), 1, R)[0]
    b, c = image[2], image[5]
    d = geometry.einstein_midpoint(image[[3, 4]], torch.tensor([0, 0]), 1, R)[0]
    # One uniform weight per child group: P = midpoint(a, b), not of the three images.
    p = geometry.einstein_midpoint(torch.stack([a, b]), torch.tensor([0, 0]), 1, R)[0]
    q, r_node = c, d
    x = geometry.einstein_midpoint(torch.stack([p, q]), torch.tensor([0, 0]), 1, R)[0]
    y = r_node

    def ce(queries, node_slice, targets):
        logits = -geometry.pairwise_distance(torch.stack(queries), text[node_slice], R) / TAU
        return F.cross_entropy(logits, torch.tensor(targets))

    torch.testing.assert_close(
        ces[("first", 0)], F.cross_entropy(hand_output.logits[:, LEAF], LABELS)
    )
    torch.testing.assert_close(ces[("first", 1)], ce([p, q, r_node], FIRST_1, [0, 1, 2]))
    torch.testing.assert_close(ces[("first", 2)], ce([x, y], FIRST_2, [0, 1]))
    # Only the groups present in the batch count: without c, Q is absent.
    partial = LABELS[:5]
    output = head(image[:5], text)
    got = loss.level_cross_entropies(output, partial)[("first", 1)]
    torch.testing.assert_close(got, ce([p, r_node], FIRST_1, [0, 2]))


def test_hypavg_of_identical_embeddings_is_that_embedding():
    point = ball(1, seed=3)[0]
    other = ball(1, seed=4)[0]
    image = torch.stack([point, point, point, other])
    labels = torch.tensor([0, 1, 1, 2])
    parents = [torch.tensor([0, 0, 1]), torch.tensor([0, 0])]
    pyramid = hypavg_pyramid(image, labels, parents, [3, 2, 1], R)
    torch.testing.assert_close(pyramid[0][0][:2], torch.stack([point, point]))
    torch.testing.assert_close(pyramid[1][0], torch.stack([point, other]))
    assert pyramid[1][1].tolist() == [True, True]
    # A group whose children sit at one point keeps it: absent groups get no weight.
    pyramid = hypavg_pyramid(image[:3], labels[:3], parents, [3, 2, 1], R)
    assert pyramid[0][1].tolist() == [True, True, False]
    assert pyramid[1][1].tolist() == [True, False]
    torch.testing.assert_close(pyramid[2][0][0], point)


@pytest.mark.parametrize("images", ["image", "hypavg"])
def test_margins_lower_the_target_logit_and_raise_the_ce(hand_layout, hand_output, images):
    plain = replace(PLAIN, superclass_images=images)
    margin = 0.3
    marginal = replace(plain, margins=MarginSchedule(shape="constant", base=margin))
    base_ces = HierarchicalLoss(hand_layout, plain, ["first"]).level_cross_entropies(
        hand_output, LABELS
    )
    loss = HierarchicalLoss(hand_layout, marginal, ["first"])
    ces = loss.level_cross_entropies(hand_output, LABELS)
    for key in base_ces:
        assert ces[key] > base_ces[key]
    # The leaf level by hand: the target logit -d / tau becomes -(d + m) / tau.
    logits = hand_output.logits[:, LEAF].clone()
    logits[torch.arange(len(LABELS)), LABELS] -= margin / TAU
    torch.testing.assert_close(ces[("first", 0)], F.cross_entropy(logits, LABELS))
    # Warm-up: no margin at epoch 0, half of it half-way.
    ramped = replace(marginal, margins=replace(marginal.margins, warmup_epochs=2.0))
    ramp = HierarchicalLoss(hand_layout, ramped, ["first"])
    torch.testing.assert_close(ramp.level_cross_entropies(hand_output, LABELS, epoch=0.0), base_ces)
    half = ramp.level_cross_entropies(hand_output, LABELS, epoch=1.0)[("first", 0)]
    logits = hand_output.logits[:, LEAF].clone()
    logits[torch.arange(len(LABELS)), LABELS] -= margin / 2 / TAU
    torch.testing.assert_close(half, F.cross_entropy(logits, LABELS))


def test_theorem_margins_follow_level_norms(hand_layout, hand_output):
    settings = replace(PLAIN, margins=MarginSchedule(shape="theorem", base=1.0, kappa=0.1))
    terms = HierarchicalLoss(hand_layout, settings, ["first"])(hand_output, LABELS)
    for level in range(3):
        eta = terms[f"text_norm/first/{level}"]
        expected = 0.1 * geometry.max_viable_margin(eta, R)
        torch.testing.assert_close(terms[f"margin/first/{level}"], expected)


# -- HNSA ------------------------------------------------------------------------------------


def test_hnsa_cross_entropy_by_hand():
    logits = torch.tensor([[1.0, 0.0]])
    extra = torch.tensor([[2.0, 5.0, -1.0]])
    allowed = torch.tensor([[True, False, True]])
    got = hnsa_cross_entropy(logits, torch.tensor([0]), [(extra, allowed)])
    expected = -1.0 + math.log(math.exp(1) + math.exp(0) + math.exp(2) + math.exp(-1))
    assert got.item() == pytest.approx(expected)
    plain = hnsa_cross_entropy(logits, torch.tensor([0]))
    torch.testing.assert_close(plain, F.cross_entropy(logits, torch.tensor([0]), reduction="none"))


def test_hnsa_level_one_by_hand(hand_layout, hand_output):
    settings = replace(PLAIN, negatives="both")
    loss = HierarchicalLoss(hand_layout, settings, ["first"])
    labels = torch.tensor([0])  # leaf a: target P, parent X, children a and b
    output = head(hand_output.image[:1], hand_output.text)
    z = output.logits[0]
    own = z[FIRST_1].exp().sum()
    up = z[8].exp()  # Y; X is P's parent
    down = z[2].exp() + z[3].exp()  # c, d; a and b are P's children
    expected = -z[4] + torch.log(own + up + down)
    ces = loss.level_cross_entropies(output, labels)
    torch.testing.assert_close(ces[("first", 1)], expected)


@pytest.mark.parametrize("images", ["image", "hypavg"])
def test_more_negatives_never_lower_the_ce(hand_layout, hand_output, images):
    def ces(negatives):
        settings = replace(PLAIN, superclass_images=images, negatives=negatives)
        loss = HierarchicalLoss(hand_layout, settings)
        return loss.level_cross_entropies(hand_output, LABELS)

    none, up, down, both = (ces(n) for n in ("none", "up", "down", "both"))
    plain = HierarchicalLoss(hand_layout, replace(PLAIN, superclass_images=images))
    torch.testing.assert_close(none, plain.level_cross_entropies(hand_output, LABELS))
    for key in none:
        assert both[key] >= up[key] - 1e-6 and both[key] >= down[key] - 1e-6
        assert up[key] >= none[key] - 1e-6 and down[key] >= none[key] - 1e-6
    assert both[("first", 1)] > up[("first", 1)] > none[("first", 1)]
    assert both[("first", 1)] > down[("first", 1)] > none[("first", 1)]
    # Top levels have no level above, leaves none below.
    torch.testing.assert_close(up[("first", 2)], none[("first", 2)])
    torch.testing.assert_close(down[("first", 0)], none[("first", 0)])


def test_negative_masks_exclude_exactly_the_edges(hand_layout):
    first = hand_layout.tree_names[0]
    edges = tree_edges(hand_layout, first, display_name_ids(hand_layout))
    for level, parents in FIRST_PARENT.items():
        up = edges.not_up[level]
        down = edges.not_down[level + 1]
        for child, parent in enumerate(parents):
            row = [column != parent for column in range(up.shape[1])]
            assert up[child].tolist() == row
            assert not down[parent, child]
        assert down.sum() == down.numel() - len(parents)


def test_edge_nodes_do_not_enter_the_denominator(hand_layout, hand_output):
    labels = torch.tensor([0, 0, 1])  # leaves a, a, b: all under P (slot 4), under X (slot 7)
    output = head(hand_output.image[:3], hand_output.text)
    loss = HierarchicalLoss(hand_layout, replace(PLAIN, negatives="both"), ["first"])
    before = loss.level_cross_entropies(output, labels)

    def bumped(column):
        logits = output.logits.clone()
        logits[:, column] += 10.0
        return loss.level_cross_entropies(replace(output, logits=logits), labels)

    # P is the leaves' parent (not an up-negative of level 0); a, b are P's children (not
    # down-negatives of level 1); X is P's parent (not an up-negative of level 1).
    torch.testing.assert_close(bumped(4)[("first", 0)], before[("first", 0)])
    torch.testing.assert_close(bumped(0)[("first", 1)], before[("first", 1)])
    torch.testing.assert_close(bumped(1)[("first", 1)], before[("first", 1)])
    torch.testing.assert_close(bumped(7)[("first", 1)], before[("first", 1)])
    # Non-adjacent nodes are negatives: raising their logits raises the CE.
    assert bumped(5)[("first", 0)] > before[("first", 0)]  # Q
    assert bumped(2)[("first", 1)] > before[("first", 1)]  # c
    assert bumped(8)[("first", 1)] > before[("first", 1)]  # Y


# -- visual-in-cone and gap -----------------------------------------------------------------


def test_vic_is_zero_on_the_leaf_text_and_positive_away(hand_layout):
    text = ball(11, seed=5)
    settings = replace(PLAIN, vic_weight=2.0, vic_radius=0.5)
    loss = HierarchicalLoss(hand_layout, settings)
    on_text = loss(head(text[LABELS], text), LABELS)
    assert on_text["vic_loss"].item() == 0.0
    assert on_text["leaf_distance"].item() < 1e-3
    image = ball(6, seed=6, scale=1.5)
    terms = loss(head(image, text), LABELS)
    distances = geometry.distance(image, text[LABELS], R)
    expected = 2.0 * F.relu(distances - 0.5).mean()
    assert expected > 0
    torch.testing.assert_close(terms["vic_loss"], expected)


def ordered_text(top_norm: float = 0.2) -> torch.Tensor:
    norms = [0.8] * 4 + [0.5] * 3 + [top_norm, 0.2] + [0.5] * 2
    return with_norms(ball(11, seed=7), norms)


def test_gap_is_zero_when_parents_are_smaller_by_more_than_the_margin(hand_layout):
    text = ordered_text()
    loss = HierarchicalLoss(hand_layout, replace(PLAIN, gap_margin=0.05))
    terms = loss(head(ball(6, seed=8), text), LABELS)
    assert terms["gap_loss"].item() == 0.0
    assert terms["label_gap"].item() == 0.0 and terms["intra_gap"].item() == 0.0
    # A margin larger than the norm steps makes every pair count.
    wide = HierarchicalLoss(hand_layout, replace(PLAIN, gap_margin=0.5))
    assert wide(head(ball(6, seed=8), text), LABELS)["gap_loss"] > 0


def test_gap_values_by_hand(hand_layout):
    text = ordered_text(top_norm=0.6)  # X (slot 7) is now larger than its children P and Q
    settings = replace(PLAIN, gap_weight=0.1, gap_margin=0.05)
    terms = HierarchicalLoss(hand_layout, settings, ["first"])(head(ball(6, seed=8), text), LABELS)
    violation = 0.6 - 0.5 + 0.05
    # Label: 8 path edges (2 per leaf); (P, X) for a and for b, (Q, X) for c violate.
    label = 3 * violation / 8
    # Intra: 4 x 3 leaf/level-1 pairs (all fine) + 3 x 2 level-1/level-2 pairs; X vs P, Q, R.
    intra = 3 * violation / 18
    assert terms["label_gap"].item() == pytest.approx(label, rel=1e-5)
    assert terms["intra_gap"].item() == pytest.approx(intra, rel=1e-5)
    assert terms["gap_loss"].item() == pytest.approx(0.1 * (label + intra), rel=1e-5)


def test_gap_skips_pairs_with_one_prompt():
    # c hangs right below the top, so it is padded as its own ancestor at level 1.
    tree = ClassTree.from_parents("t", {"a": "P", "b": "P", "P": "X", "c": "Y"})
    layout = HeadLayout.from_forest(Forest([tree]))
    assert layout.names == ("a", "b", "c", "P", "c", "X", "Y")
    loss = HierarchicalLoss(layout, PLAIN)
    edges = tree_edges(layout, "t", display_name_ids(layout))
    assert edges.label_child.tolist() == [0, 1, 3, 3, 4]  # no (c, c)
    assert edges.intra[0].tolist() == [[True, True], [True, True], [True, False]]
    norms = [0.8, 0.8, 0.8, 0.5, 0.8, 0.2, 0.2]  # the copy of c has c's embedding
    text = with_norms(ball(7, seed=9), norms)
    text[4] = text[2]
    terms = loss(head(ball(3, seed=10), text), torch.tensor([0, 1, 2]))
    assert terms["label_gap"].item() == 0.0


# -- forest, per-level outputs, objective, gradients ----------------------------------------


def test_forest_sum_equals_sum_of_single_tree_losses(hand_layout, hand_output):
    settings = HierarchicalSettings(margins=MarginSchedule(shape="linear", base=0.2))
    both = HierarchicalLoss(hand_layout, settings)(hand_output, LABELS)
    singles = [
        HierarchicalLoss(hand_layout, settings, [tree])(hand_output, LABELS)
        for tree in ("first", "second")
    ]
    for key in ("hita_loss", "gap_loss"):
        torch.testing.assert_close(both[key], singles[0][key] + singles[1][key])
    torch.testing.assert_close(both["vic_loss"], singles[0]["vic_loss"])
    mean = HierarchicalLoss(hand_layout, replace(settings, forest_reduction="mean"))
    averaged = mean(hand_output, LABELS)
    for key in ("hita_loss", "gap_loss"):
        torch.testing.assert_close(averaged[key], both[key] / 2)


def test_by_level_scores_each_level_on_its_own_images(hand_layout, hand_output):
    loss = HierarchicalLoss(hand_layout)
    keys = [("first", 0), ("first", 1), ("first", 2), ("second", 0), ("second", 1)]
    plain = loss(hand_output, LABELS)
    same = loss(hand_output, LABELS, by_level={key: hand_output for key in keys})
    for key, value in plain.items():
        torch.testing.assert_close(same[key], value)
    other = head(ball(6, seed=11), hand_output.text)
    by_level = {key: hand_output for key in keys} | {("first", 1): other}
    mixed = loss(hand_output, LABELS, by_level=by_level)
    own = loss.level_cross_entropies(other, LABELS)[("first", 1)]
    torch.testing.assert_close(mixed["hita/first/1"], own)
    for tree, level in keys:
        if (tree, level) != ("first", 1):
            torch.testing.assert_close(mixed[f"hita/{tree}/{level}"], plain[f"hita/{tree}/{level}"])
    with pytest.raises(UserInputError, match="`by_level` must be"):
        loss(hand_output, LABELS, by_level={("first", 0): hand_output})


def test_output_keys_and_objective(hand_layout, hand_output):
    loss = HierarchicalLoss(hand_layout)
    terms = loss(hand_output, LABELS, epoch=0.5)
    assert {key for key in terms if key.endswith("_loss")} == {"hita_loss", "vic_loss", "gap_loss"}
    assert all(value.dim() == 0 for value in terms.values())
    assert all(not value.requires_grad for key, value in terms.items() if "/" in key)
    assert loss.needs == frozenset({"adversarial"})
    objective = loss.hita_objective(epoch=0.5)
    torch.testing.assert_close(objective(hand_output, LABELS), terms["hita_loss"])


def test_every_term_has_finite_gradients(forest):
    layout = HeadLayout.from_forest(forest)
    settings = HierarchicalSettings(margins=MarginSchedule(shape="theorem", base=1.0, kappa=0.2))
    loss = HierarchicalLoss(layout, settings)
    generator = torch.Generator().manual_seed(0)
    image_tangent = (torch.randn(16, 8, generator=generator) * 2).requires_grad_(True)
    text_tangent = (torch.randn(layout.num_nodes, 8, generator=generator)).requires_grad_(True)
    curvature = torch.tensor(1.3, requires_grad=True)
    image = geometry.project(geometry.exp0(image_tangent, curvature), curvature)
    text = geometry.project(geometry.exp0(text_tangent, curvature), curvature)
    output = head(image, text, r=curvature, tau=0.1)
    labels = torch.randint(0, len(forest.leaves), (16,), generator=generator)
    terms = loss(output, labels, epoch=1.0)
    for key in ("hita_loss", "vic_loss", "gap_loss"):
        grads = torch.autograd.grad(
            terms[key],
            [image_tangent, text_tangent, curvature],
            retain_graph=True,
            allow_unused=True,  # the gap terms use no image
        )
        assert torch.isfinite(terms[key])
        assert all(grad is None or torch.isfinite(grad).all() for grad in grads), key
        assert grads[1].abs().sum() > 0, key
    assert len([key for key in terms if key.startswith("hita/")]) == 4 + 3 + 3


# -- parity with a per-level computation ----------------------------------------------------


def per_level_terms(loss, output, labels, *, epoch, by_level=None):
    """The loss computed one (tree, level) at a time from the public helpers."""
    layout, settings = loss.layout, loss.settings
    text, r, tau = output.text, output.curvature, output.temperature
    norms = torch.linalg.vector_norm(text, dim=-1)
    terms, per_tree, label_gaps, intra_gaps = {}, [], [], []
    for tree in loss.trees:
        depth = layout.depth(tree)
        slices = [layout.slice_of(tree, level) for level in range(depth + 1)]
        sizes = [s.stop - s.start for s in slices]
        targets = [layout.targets[(tree, level)] for level in range(depth + 1)]
        parents = []
        for level in range(depth):
            parent = torch.empty(sizes[level], dtype=torch.long)
            parent[targets[level]] = targets[level + 1]
            parents.append(parent)
        level_norms = torch.stack([norms.detach()[s].mean() for s in slices])
        margins = level_margins(
            settings.margins, depth, epoch=epoch, level_norms=level_norms, curvature=r
        )
        ces = []
        for level in range(depth + 1):
            source = output if by_level is None else by_level[(tree, level)]
            if level == 0 or settings.superclass_images == "image":
                queries, weights = None, None
                level_targets = targets[level][labels]
            else:
                pyramid = hypavg_pyramid(source.image, labels, parents, sizes, source.curvature)
                queries, present = pyramid[level]
                weights = present.float()
                level_targets = torch.arange(sizes[level])

            def scores(at, source=source, queries=queries, slices=slices):
                if queries is None:
                    return source.logits[:, slices[at]]
                distances = geometry.pairwise_distance(queries, source.text[slices[at]], r)
                return -distances / tau

            negatives = []
            if settings.negatives_up and level < depth:
                edge = F.one_hot(parents[level], sizes[level + 1]).bool()
                negatives.append((scores(level + 1), ~edge[level_targets]))
            if settings.negatives_down and level > 0:
                edge = F.one_hot(parents[level - 1], sizes[level]).bool().T
                negatives.append((scores(level - 1), ~edge[level_targets]))
            logits = apply_margin(scores(level), level_targets, margins[level], tau)
            ce = hnsa_cross_entropy(logits, level_targets, negatives)
            ce = ce.mean() if weights is None else (ce * weights).sum() / weights.sum()
            ces.append(ce)
            terms[f"hita/{tree}/{level}"] = ce
            terms[f"text_norm/{tree}/{level}"] = level_norms[level]
            if settings.margins.enabled:
                terms[f"margin/{tree}/{level}"] = margins[level]
        weights = level_weights(depth, settings.level_weights)
        per_tree.append(sum(w * ce for w, ce in zip(weights, ces, strict=True)))
        names = layout.names
        children = torch.cat([targets[lv] + slices[lv].start for lv in range(depth)])
        above = torch.cat([targets[lv + 1] + slices[lv + 1].start for lv in range(depth)])
        distinct = torch.tensor(
            [names[c] != names[p] for c, p in zip(children, above, strict=True)]
        )
        label_gaps.append(
            label_gap(norms, children[distinct], above[distinct], settings.gap_margin)
        )
        masks = [
            torch.tensor(
                [
                    [names[i] != names[j] for j in range(s1.start, s1.stop)]
                    for i in range(s0.start, s0.stop)
                ]
            )
            for s0, s1 in zip(slices[:-1], slices[1:], strict=True)
        ]
        intra_gaps.append(
            intra_gap(
                [norms[s] for s in slices[:-1]],
                [norms[s] for s in slices[1:]],
                masks,
                settings.gap_margin,
            )
        )
    scale = 1 / len(loss.trees) if settings.forest_reduction == "mean" else 1
    terms["hita_loss"] = scale * sum(per_tree)
    terms["label_gap"] = scale * sum(label_gaps)
    terms["intra_gap"] = scale * sum(intra_gaps)
    terms["gap_loss"] = settings.gap_weight * (terms["label_gap"] + terms["intra_gap"])
    leaf_text = text[layout.slice_of(loss.trees[0], 0)][labels]
    distances = geometry.distance(output.image, leaf_text, r)
    terms["vic_loss"] = settings.vic_weight * F.relu(distances - settings.vic_radius).mean()
    return terms


def assert_close_in_norm(got: torch.Tensor, want: torch.Tensor, name: str) -> None:
    # Float32 sums in another order, amplified near the boundary (theorem margins of text
    # norms close to the radius): compare the whole gradient, not each (tiny) entry.
    assert torch.isfinite(got).all(), name
    assert (got - want).norm() <= 1e-4 * want.norm() + 1e-7, name


PARITY_SETTINGS = [
    HierarchicalSettings(),
    HierarchicalSettings(forest_reduction="mean", level_weights="uniform"),
    HierarchicalSettings(superclass_images="image", negatives="up"),
    HierarchicalSettings(negatives="down", margins=MarginSchedule(shape="linear", base=0.2)),
    HierarchicalSettings(negatives="none", margins=MarginSchedule(), forest_reduction="mean"),
    HierarchicalSettings(
        superclass_images="image",
        margins=MarginSchedule(shape="theorem", base=1.0, kappa=0.2, warmup_epochs=2.0),
    ),
]


def random_head(layout, seed: int, *, batch: int = 24, text=None, curvature=None):
    generator = torch.Generator().manual_seed(seed)
    image_tangent = (torch.randn(batch, 8, generator=generator) * 1.5).requires_grad_(True)
    text_tangent = torch.randn(layout.num_nodes, 8, generator=generator).requires_grad_(True)
    curvature = torch.tensor(1.3, requires_grad=True) if curvature is None else curvature
    image = geometry.project(geometry.exp0(image_tangent, curvature), curvature)
    if text is None:
        text = geometry.project(geometry.exp0(text_tangent, curvature), curvature)
    return head(image, text, r=curvature, tau=0.2), [image_tangent, text_tangent, curvature]


@pytest.mark.parametrize("settings", PARITY_SETTINGS)
def test_loss_matches_a_per_level_computation(forest, settings):
    layout = HeadLayout.from_forest(forest)
    loss = HierarchicalLoss(layout, settings)
    output, leaves = random_head(layout, 0)
    # 24 images over 20 leaves: some leaves (and possibly superclasses) are absent.
    labels = torch.randint(0, len(forest.leaves), (24,), generator=torch.Generator().manual_seed(1))
    got = loss(output, labels, epoch=0.5)
    expected = per_level_terms(loss, output, labels, epoch=0.5)
    assert set(expected) <= set(got)
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value.detach() if "/" in key else value, msg=key)
    objective = loss.hita_objective(epoch=0.5)(output, labels)
    torch.testing.assert_close(objective, expected["hita_loss"])
    for key in ("hita_loss", "vic_loss", "gap_loss"):
        grads = torch.autograd.grad(got[key], leaves, retain_graph=True, allow_unused=True)
        wanted = torch.autograd.grad(expected[key], leaves, retain_graph=True, allow_unused=True)
        for grad, want in zip(grads, wanted, strict=True):
            if want is None:
                assert grad is None or grad.abs().max() == 0, key
            else:
                assert_close_in_norm(grad, want, key)


def test_per_level_outputs_match_a_per_level_computation(forest):
    layout = HeadLayout.from_forest(forest)
    loss = HierarchicalLoss(layout)
    output, leaves = random_head(layout, 2)
    labels = torch.randint(0, len(forest.leaves), (24,), generator=torch.Generator().manual_seed(3))
    by_level = {}
    for seed, key in enumerate(loss.keys):
        # The leaf level shares one output; every superclass level gets its own images.
        if key[1] == 0:
            by_level[key] = output
        else:
            by_level[key] = random_head(layout, 10 + seed, text=output.text)[0]
    got = loss(output, labels, epoch=1.0, by_level=by_level)
    expected = per_level_terms(loss, output, labels, epoch=1.0, by_level=by_level)
    for key in [k for k in expected if k.startswith("hita")]:
        torch.testing.assert_close(
            got[key], expected[key].detach() if "/" in key else expected[key]
        )
    grads = torch.autograd.grad(got["hita_loss"], leaves[:2], retain_graph=True)
    wanted = torch.autograd.grad(expected["hita_loss"], leaves[:2])
    for grad, want in zip(grads, wanted, strict=True):
        assert_close_in_norm(grad, want, "hita_loss")


# -- baselines ------------------------------------------------------------------------------


def euclidean(cosines: torch.Tensor, scale: float) -> HeadOutput:
    return HeadOutput(
        image=torch.zeros(len(cosines), 2),
        text=torch.zeros(cosines.shape[1], 2),
        logits=scale * cosines,
        features=torch.zeros(len(cosines), 2),
        curvature=None,
        temperature=1 / scale,
        geometry="euclidean",
    )


def cosines(seed: int) -> torch.Tensor:
    return torch.rand(3, 11, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_tecoa_is_the_leaf_cross_entropy(hand_layout):
    output = euclidean(cosines(0), 100.0)
    labels = torch.tensor([0, 3, 2])
    terms = TeCoALoss(hand_layout)(output, labels)
    logits = 100.0 * cosines(0)[:, :4]
    expected = -logits.log_softmax(-1)[torch.arange(3), labels].mean()
    torch.testing.assert_close(terms["tecoa_loss"], expected)
    assert list(terms) == ["tecoa_loss"] and TeCoALoss.needs == frozenset({"adversarial"})


def test_pmg_aft_by_hand(hand_layout):
    labels = torch.tensor([1, 0, 2])
    adversarial = euclidean(cosines(0), 100.0)
    clean = euclidean(cosines(1), 100.0)
    reference = euclidean(cosines(2), 50.0)  # a different logit scale: KL uses raw cosines
    terms = PMGAFTLoss(hand_layout)(adversarial, clean, reference, labels)

    def kl(target, source):
        p = target[:, :4].softmax(-1)
        q = source[:, :4].softmax(-1)
        return (p * (p.log() - q.log())).sum()

    torch.testing.assert_close(terms["ce_loss"], F.cross_entropy(100.0 * cosines(0)[:, :4], labels))
    torch.testing.assert_close(terms["kl_reference_loss"], kl(cosines(2), cosines(0)))
    torch.testing.assert_close(terms["kl_clean_loss"], kl(cosines(1), cosines(0)))
    weighted = PMGAFTLoss(hand_layout, PMGAFTSettings(reference_weight=0.5, clean_weight=2.0))
    halves = weighted(adversarial, clean, reference, labels)
    torch.testing.assert_close(halves["kl_reference_loss"], 0.5 * terms["kl_reference_loss"])
    torch.testing.assert_close(halves["kl_clean_loss"], 2.0 * terms["kl_clean_loss"])
    assert PMGAFTLoss.needs == frozenset({"adversarial", "clean", "reference_adversarial"})


def test_pmg_aft_kl_terms_vanish_for_equal_distributions(hand_layout):
    adversarial = euclidean(cosines(0), 100.0)
    reference = euclidean(cosines(0), 20.0)  # same cosines, another scale
    terms = PMGAFTLoss(hand_layout)(adversarial, adversarial, reference, torch.tensor([0, 1, 2]))
    assert terms["kl_clean_loss"].abs().item() < 1e-6
    assert terms["kl_reference_loss"].abs().item() < 1e-6


def test_fare_matches_direct_computation():
    generator = torch.Generator().manual_seed(0)
    adversarial = torch.randn(4, 5, generator=generator, requires_grad=True)
    reference = torch.randn(4, 5, generator=generator)
    terms = FARELoss()(adversarial, reference)
    expected = sum(((adversarial[i] - reference[i]) ** 2).sum() for i in range(4)) / 4
    torch.testing.assert_close(terms["fare_loss"], expected)
    assert FARELoss()(reference, reference)["fare_loss"].item() == 0.0
    (grad,) = torch.autograd.grad(terms["fare_loss"], adversarial)
    torch.testing.assert_close(grad, 2 * (adversarial - reference).detach() / 4)
    assert FARELoss.needs == frozenset({"adversarial", "reference_clean"})


def test_baseline_gradients_are_finite(hand_layout):
    raw = cosines(0).requires_grad_(True)
    adversarial = euclidean(raw, 100.0)
    clean = euclidean(cosines(1), 100.0)
    terms = PMGAFTLoss(hand_layout)(adversarial, clean, clean, torch.tensor([0, 1, 2]))
    terms = terms | TeCoALoss(hand_layout)(adversarial, torch.tensor([0, 1, 2]))
    for key, value in terms.items():
        (grad,) = torch.autograd.grad(value, raw, retain_graph=True)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0, key
