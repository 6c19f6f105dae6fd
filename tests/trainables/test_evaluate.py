from __future__ import annotations

import pytest
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


def test_robustness_profile_matches_direct_level_attacks(base_model, forest, embedded):
    from trainables.attacks import PGD
    from trainables.evaluate import robustness_profile
    from trainables.model import LevelHead

    classifier = ZeroShotClassifier(base_model.loaded, forest).eval()
    test = embedded.split("test")
    images, labels = test.images[:40], test.labels[:40]
    attack = AttackSettings(eps=4 / 255, steps=3, seed=5)
    profile = robustness_profile(classifier, images, labels, attack, batch_size=40)
    tree = forest["symmetry"]
    pgd = PGD(
        LevelHead(classifier, "symmetry", 1),
        eps=attack.eps,
        steps=attack.steps,
        step_size=attack.resolved_step_size,
        generator=torch.Generator().manual_seed(5),
    )
    adversarial = pgd(images.float() / 255, tree.leaf_to_node(1)[labels])
    with torch.no_grad():
        logits = classifier(adversarial)
    level = classifier.level_logits(logits, "symmetry", 1).argmax(1) == tree.leaf_to_node(1)[labels]
    leaf = classifier.level_logits(logits, "symmetry", 0).argmax(1) == labels
    cell = profile["superclass_attacks"]["symmetry"][1]
    assert cell["level"] == pytest.approx(level.float().mean().item())
    assert cell["leaf"] == pytest.approx(leaf.float().mean().item())
    leaves = [
        c["leaf"] for levels in profile["superclass_attacks"].values() for c in levels.values()
    ]
    assert profile["transfer"] == sum(leaves) / len(leaves)
    assert profile["robust_leaf"] < profile["clean_leaf"]
    assert profile["settings"]["samples"] == 40 and profile["settings"]["attack"]["steps"] == 3


def test_autoattack_accuracy_is_at_most_pgd_accuracy(base_model, forest, embedded):
    from trainables.evaluate import autoattack_accuracy

    classifier = ZeroShotClassifier(base_model.loaded, forest).eval()
    test = embedded.split("test")
    images, labels = test.images[:32], test.labels[:32]
    result = autoattack_accuracy(classifier, images, labels, eps=2 / 255, steps=5)
    clean = level_accuracy(classifier, images, labels)[forest.names[0]][0]
    assert result["accuracy"] < clean
    assert result["settings"]["attacks"] == ["apgd-ce", "apgd-t"]
    assert result["settings"]["samples"] == 32
