from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from trainables.errors import UserInputError
from trainables.model import HeadLayout, LevelHead, ZeroShotClassifier


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
