from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from trainables.captions import CaptionBank
from trainables.evaluate import AttackSettings, attacked_accuracy, level_accuracy
from trainables.model import ZeroShotClassifier
from trainables.pretrain import contrastive_loss


def test_contrastive_loss_on_a_hand_computable_case():
    features = torch.eye(2)
    one_positive = torch.eye(2, dtype=torch.bool)
    loss = contrastive_loss(features, features, one_positive, torch.tensor(1.0))
    assert math.isclose(loss.item(), math.log(1 + math.e) - 1, rel_tol=1e-6)
    # An image for which every caption is true has nothing to learn on the image side.
    all_true = torch.tensor([[True, True], [False, True]])
    loss = contrastive_loss(features, features, all_true, torch.tensor(1.0))
    image_side = (math.log(1 + math.e) - 1) / 2  # only image 1 contributes, mean over 2
    text_side = (
        -math.log(math.e / (1 + math.e))  # caption 0: image 0 only
        - 0.5 * (math.log(1 / (1 + math.e)) + math.log(math.e / (1 + math.e)))  # caption 1
    ) / 2
    assert math.isclose(loss.item(), (image_side + text_side) / 2, rel_tol=1e-6)


def test_contrastive_loss_gradients_are_finite():
    generator = torch.Generator().manual_seed(0)
    images = F.normalize(torch.randn(8, 16, generator=generator), dim=-1).requires_grad_()
    texts = F.normalize(torch.randn(5, 16, generator=generator), dim=-1).requires_grad_()
    positives = torch.zeros(8, 5, dtype=torch.bool)
    positives[torch.arange(8), torch.arange(8) % 5] = True
    contrastive_loss(images, texts, positives, torch.tensor(50.0)).backward()
    assert torch.isfinite(images.grad).all() and torch.isfinite(texts.grad).all()


def test_captions_name_every_leaf_and_every_superclass_of_every_tree(forest):
    bank = CaptionBank.from_forest(forest)
    text = " ".join(bank.captions)
    for tree in forest.trees:
        for level in range(tree.depth + 1):
            for name in tree.level_names(level):
                assert f"a photo of a {name}." in bank.captions, name
    assert "a kind of" in text
    # Truth table: a superclass caption is true of exactly the leaves under it.
    tree = forest.trees[0]
    top = tree.level_names(tree.depth)[0]
    caption = bank.captions.index(f"a photo of a {top}.")
    members = tree.leaf_to_node(tree.depth) == 0
    assert torch.equal(bank.describes[caption], members)


def test_caption_sampling_respects_the_fractions(forest):
    bank = CaptionBank.from_forest(forest)
    labels = torch.arange(len(forest.leaves)).repeat(200)
    chosen = bank.sample(
        labels, torch.Generator().manual_seed(0), super_fraction=0.3, context_fraction=0.0
    )
    true_of_own_leaf = bank.describes[chosen, labels]
    assert bool(true_of_own_leaf.all())
    leaf_only = bank.describes[chosen].sum(dim=1) == 1
    assert 0.6 < leaf_only.float().mean().item() < 0.8


def test_base_model_meets_the_zero_shot_and_attackability_bars(base_model, forest, embedded):
    report = base_model.report
    leaf = report["clean"][forest.trees[0].name]
    assert float(leaf.get(0, leaf.get("0"))) >= 0.80
    for tree in forest.trees:
        levels = report["clean"][tree.name]
        assert float(levels.get(tree.depth, levels.get(str(tree.depth)))) >= 0.90, tree.name
    assert report["pgd_leaf"]["leaf"] < 0.20
    # Recompute on a fresh sample of the test split, independently of the cached report.
    test = embedded.split("test").subset(400)
    classifier = ZeroShotClassifier(base_model.loaded, forest).eval()
    clean = level_accuracy(classifier, test.images, test.labels)
    assert clean[forest.trees[0].name][0] >= 0.80
    attacked = attacked_accuracy(
        classifier,
        test.images[:200],
        test.labels[:200],
        AttackSettings(eps=8 / 255, steps=10),
        tree=forest.trees[0].name,
    )
    assert attacked[forest.trees[0].name][0] < 0.20


def test_second_load_comes_from_the_cache(base_model):
    from trainables.pretrain import load_or_pretrain_base

    again = load_or_pretrain_base()
    assert not again.built and again.path == base_model.path
    for key, value in again.loaded.model.state_dict().items():
        assert torch.equal(value, base_model.loaded.model.state_dict()[key]), key


def test_a_freshly_pretrained_model_carries_no_gradients(tmp_path, monkeypatch):
    from trainables.data.embedded import EmbeddedSpec
    from trainables.pretrain import PretrainSettings, load_or_pretrain_base

    monkeypatch.setenv("RAYSEARCH_CACHE", str(tmp_path))
    spec = EmbeddedSpec(n_train=256, n_val=20, n_test=40)
    fresh = load_or_pretrain_base(
        PretrainSettings(steps=2, batch_size=32, warmup_steps=1), dataset_spec=spec
    )
    assert fresh.built
    assert all(p.grad is None for p in fresh.loaded.model.parameters())
    assert not fresh.loaded.model.training
