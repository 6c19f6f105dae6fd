from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from trainables import geometry
from trainables.errors import UserInputError
from trainables.head import HeadLayout, HeadSettings
from trainables.model import LevelHead, ZeroShotClassifier


@pytest.fixture()
def classifier(tiny_clip, forest):
    return ZeroShotClassifier(tiny_clip, forest).eval()


def test_layout_has_one_slot_per_node_of_every_level(forest):
    layout = HeadLayout.from_forest(forest)
    leaves = len(forest.leaves)
    expected = leaves + sum(
        len(tree.level_nodes(level)) for tree in forest.trees for level in range(1, tree.depth + 1)
    )
    assert layout.num_nodes == expected
    covered = torch.zeros(expected, dtype=torch.int)
    for (tree, level), node_slice in layout.slices.items():
        if level > 0:
            covered[node_slice] += 1
        assert node_slice.stop - node_slice.start == len(forest[tree].level_nodes(level))
    assert covered[:leaves].sum() == 0 and bool((covered[leaves:] == 1).all())


def test_level_logits_match_a_direct_cosine_computation(classifier, forest):
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = classifier(images)
        clip = classifier.clip
        normalized = (
            images - torch.tensor(clip.visual.image_mean).view(1, 3, 1, 1)
        ) / torch.tensor(clip.visual.image_std).view(1, 3, 1, 1)
        image = F.normalize(clip.encode_image(normalized), dim=-1)
        for tree in forest.trees:
            for level in range(tree.depth + 1):
                prompts = [f"a photo of a {name}." for name in tree.level_names(level)]
                text = F.normalize(clip.encode_text(classifier.tokenizer(prompts)), dim=-1)
                expected = clip.logit_scale.exp().clamp(max=100) * image @ text.t()
                got = classifier.level_logits(logits, tree.name, level)
                torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_text_prototypes_are_cached_not_recomputed_per_call(classifier, monkeypatch):
    calls = []
    original = classifier.clip.encode_text
    monkeypatch.setattr(
        classifier.clip, "encode_text", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    with torch.no_grad():
        classifier(torch.rand(2, 3, 32, 32))
        classifier(torch.rand(2, 3, 32, 32))
    assert calls == []


def test_template_ensembles_average_normalised_embeddings(tiny_clip, forest):
    templates = ("a photo of a {}.", "a drawing of a {}.")
    ensembled = ZeroShotClassifier(tiny_clip, forest, templates=templates)
    singles = [ZeroShotClassifier(tiny_clip, forest, templates=(t,)).prototypes for t in templates]
    torch.testing.assert_close(ensembled.prototypes, F.normalize(singles[0] + singles[1], dim=-1))


def test_level_targets_and_level_head(classifier, forest):
    tree = forest.trees[0]
    labels = torch.arange(len(forest.leaves))
    targets = classifier.layout.level_targets(labels, tree.name, tree.depth)
    assert torch.equal(targets, tree.leaf_to_node(tree.depth))
    head = LevelHead(classifier, tree.name, tree.depth)
    with torch.no_grad():
        assert head(torch.rand(3, 3, 32, 32)).shape == (3, len(tree.level_nodes(tree.depth)))
    with pytest.raises(UserInputError):
        classifier.layout.slice_of(tree.name, tree.depth + 1)


def test_bad_templates_are_refused(tiny_clip, forest):
    with pytest.raises(UserInputError, match="`templates` must be"):
        ZeroShotClassifier(tiny_clip, forest, templates=("no placeholder",))


# -- hyperbolic head --------------------------------------------------------------------------

HYPERBOLIC = HeadSettings(geometry="hyperbolic", train_text_projection=True)


@pytest.fixture()
def hyperbolic(tiny_clip, forest):
    return ZeroShotClassifier(tiny_clip, forest, head=HYPERBOLIC).eval()


def test_hyperbolic_logits_are_negative_distances_over_temperature(hyperbolic, forest):
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        output = hyperbolic(images, return_embeddings=True)
        r = hyperbolic.curvature
        # Direct computation: exp0 of the scaled projections, distance per pair.
        prompts = [f"a photo of a {name}." for name in hyperbolic.layout.names]
        text = hyperbolic.clip.encode_text(hyperbolic.tokenizer(prompts))
        text = geometry.project(geometry.exp0(hyperbolic.log_text_scale.exp() * text, r), r)
        image = geometry.exp0(hyperbolic.log_image_scale.exp() * output.features, r)
        image = geometry.project(image, r)
        expected = -geometry.distance(image[:, None], text[None], r) / HYPERBOLIC.temperature
    torch.testing.assert_close(output.logits, expected, rtol=1e-4, atol=1e-3)
    assert output.text.shape[0] == hyperbolic.layout.num_nodes
    assert float(output.image.norm(dim=-1).max()) < 1 / float(r.sqrt())


def test_hyperbolic_init_puts_the_mean_text_norm_at_init_norm(hyperbolic):
    with torch.no_grad():
        tangent = hyperbolic.log_text_scale.exp() * hyperbolic.project_text(hyperbolic.text_hidden)
    assert float(tangent.norm(dim=-1).mean()) == pytest.approx(HYPERBOLIC.init_norm, rel=1e-4)


def test_image_scale_calibration_is_deterministic_and_hits_init_norm(hyperbolic):
    images = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    hyperbolic.calibrate_image_scale(images)
    with torch.no_grad():
        norm = (hyperbolic.log_image_scale.exp() * hyperbolic.encode_images(images)).norm(dim=-1)
    assert float(norm.mean()) == pytest.approx(HYPERBOLIC.init_norm, rel=1e-4)


def test_text_projection_trains_while_the_text_transformer_stays_cached(hyperbolic, monkeypatch):
    trained = hyperbolic.freeze_for_finetuning()
    names = {name for name, p in hyperbolic.named_parameters() if p.requires_grad}
    assert "clip.text_projection" in names and "log_text_scale" in names
    assert not any(name.startswith("clip.transformer") for name in names)
    assert all(p.requires_grad for p in hyperbolic.clip.visual.parameters())
    calls = []
    original = hyperbolic.clip.encode_text
    monkeypatch.setattr(
        hyperbolic.clip, "encode_text", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    loss = hyperbolic(torch.rand(2, 3, 32, 32)).logsumexp(dim=1).mean()
    loss.backward()
    assert calls == []
    assert hyperbolic.clip.text_projection.grad is not None
    assert all(p.grad is not None for p in trained if p is not hyperbolic.log_curvature)


def test_text_delta_moves_the_text_embeddings(hyperbolic):
    delta = torch.full(hyperbolic.text_delta_shape, 1e-2)
    with torch.no_grad():
        moved = hyperbolic.text_embeddings(delta)
        still = hyperbolic.text_embeddings()
    assert moved.shape == still.shape and not torch.allclose(moved, still)


def test_with_forest_shares_weights_and_head_parameters(hyperbolic, forest):
    single = hyperbolic.with_forest(forest.select([forest.names[0]]))
    assert single.clip is hyperbolic.clip and single.log_image_scale is hyperbolic.log_image_scale
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        full = hyperbolic(images)
        part = single(images)
    leaf = hyperbolic.layout.slice_of(forest.names[0], 0)
    torch.testing.assert_close(part[:, leaf], full[:, leaf])
    top = forest[forest.names[0]].depth
    torch.testing.assert_close(
        single.level_logits(part, forest.names[0], top),
        hyperbolic.level_logits(full, forest.names[0], top),
    )


def test_bad_head_settings_are_refused():
    with pytest.raises(UserInputError, match="`head.geometry` must be"):
        HeadSettings(geometry="spherical")
    with pytest.raises(UserInputError, match="`head.temperature` must be"):
        HeadSettings(temperature=0)


def test_separate_batches_keep_batch_norm_statistics_apart(tiny_clip, forest):
    classifier = ZeroShotClassifier(tiny_clip, forest).train()  # batch norm uses batch stats
    generator = torch.Generator().manual_seed(0)
    clean = torch.rand(6, 3, 32, 32, generator=generator)
    adversarial = (clean + 0.3 * torch.rand(6, 3, 32, 32, generator=generator)).clamp(0, 1)
    stacked = torch.cat([adversarial, clean])
    with torch.no_grad():
        separate = classifier(stacked, separate_batches=2)
        one_by_one = torch.cat([classifier(adversarial), classifier(clean)])
        shared = classifier(stacked)
    assert torch.allclose(separate, one_by_one, atol=1e-5)
    assert not torch.allclose(shared, one_by_one, atol=1e-3)  # mixed statistics differ


def test_with_forest_takes_a_zero_shot_datasets_own_prompts(classifier):
    from trainables.hierarchy.tree import ClassTree, Forest

    colours = Forest([ClassTree.flat("colour", ("red", "blue"))])
    twin = classifier.with_forest(colours, templates=("a photo of a {} shape.",))
    assert twin.templates == ("a photo of a {} shape.",) and twin.clip is classifier.clip
    expected = classifier.encode_prompts(["red"])  # the classifier's own template differs
    assert not torch.allclose(twin.prototypes[:1], expected)
    with pytest.raises(UserInputError, match="`templates` must be"):
        classifier.with_forest(colours, templates=("no placeholder",))
