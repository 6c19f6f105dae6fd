from __future__ import annotations

import torch

from trainables.evaluate import AttackSettings, attacked_accuracy, level_accuracy
from trainables.model import ZeroShotClassifier


def _sample(n=24):
    generator = torch.Generator().manual_seed(0)
    return torch.randint(
        0, 256, (n, 3, 32, 32), generator=generator, dtype=torch.uint8
    ), torch.arange(n) % 20


def test_level_accuracy_matches_a_direct_computation(tiny_clip, forest):
    classifier = ZeroShotClassifier(tiny_clip, forest).eval()
    images, labels = _sample()
    got = level_accuracy(classifier, images, labels, batch_size=7)
    with torch.no_grad():
        logits = classifier(images.float() / 255)
    for tree in forest.trees:
        for level in range(tree.depth + 1):
            predicted = classifier.level_logits(logits, tree.name, level).argmax(dim=1)
            expected = (predicted == tree.leaf_to_node(level)[labels]).float().mean().item()
            assert abs(got[tree.name][level] - expected) < 1e-6


def test_evaluation_never_updates_batch_norm_statistics_or_mode(tiny_clip, forest):
    classifier = ZeroShotClassifier(tiny_clip, forest).train()
    before = {k: v.clone() for k, v in classifier.state_dict().items()}
    images, labels = _sample(8)
    level_accuracy(classifier, images, labels)
    attacked_accuracy(
        classifier, images, labels, AttackSettings(eps=8 / 255, steps=2), tree="form", level=1
    )
    assert classifier.training and classifier.clip.training
    for key, value in classifier.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_attack_lowers_accuracy_only_within_its_budget(base_model, forest, embedded):
    classifier = ZeroShotClassifier(base_model.loaded, forest).eval()
    test = embedded.split("test").subset(100)
    clean = level_accuracy(classifier, test.images, test.labels)["form"][0]
    weak = attacked_accuracy(
        classifier, test.images, test.labels, AttackSettings(eps=1 / 255, steps=3), tree="form"
    )
    strong = attacked_accuracy(
        classifier, test.images, test.labels, AttackSettings(eps=8 / 255, steps=10), tree="form"
    )
    assert strong["form"][0] < weak["form"][0] <= clean
