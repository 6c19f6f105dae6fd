from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from trainables import pretrain
from trainables.captions import CaptionBank
from trainables.evaluate import AttackSettings, attacked_accuracy, level_accuracy
from trainables.model import ZeroShotClassifier
from trainables.pretrain import (
    LEAF_BAR,
    PGD_LEAF_BAR,
    TOP_LEVEL_BAR,
    bar_margins,
    base_model_key,
    contrastive_loss,
)


def test_contrastive_loss_on_a_hand_computable_case():
    features = torch.eye(2)
    one_positive = torch.eye(2, dtype=torch.bool)
    loss = contrastive_loss(features, features, one_positive, torch.tensor(1.0))
    assert math.isclose(loss.item(), math.log(1 + math.e) - 1, rel_tol=1e-6)
    # Image 0 and caption 1 are each true of both: their terms average two log-probabilities,
    # log p = 1 - log(1 + e) for the matching pair and 0 - log(1 + e) for the other.
    all_true = torch.tensor([[True, True], [False, True]])
    loss = contrastive_loss(features, features, all_true, torch.tensor(1.0))
    one_side = ((math.log(1 + math.e) - 0.5) + (math.log(1 + math.e) - 1)) / 2
    assert math.isclose(loss.item(), one_side, rel_tol=1e-6)


def test_every_true_caption_pulls_the_image_even_when_another_already_wins():
    # Caption 0 (the leaf) already matches image 0; caption 1 (a superclass) is also true of it.
    # Image 1 is another class with caption 2.
    positives = torch.tensor([[True, True, False], [False, False, True]])
    texts = torch.eye(3)

    def loss_with_superclass_similarity(similarity: float) -> float:
        images = torch.tensor([[1.0, similarity, 0.0], [0.0, 0.0, 1.0]])
        return contrastive_loss(images, texts, positives, torch.tensor(10.0)).item()

    # Raising the superclass similarity from 0 to 0.5 lowers this loss by 0.74; with the log of
    # a sum over positives (the leaf caption alone already wins) it would drop by only 0.12.
    drop = loss_with_superclass_similarity(0.0) - loss_with_superclass_similarity(0.5)
    assert drop == pytest.approx(0.738, abs=0.01)


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
    margins = bar_margins(base_model.report, forest)
    assert set(margins) == {"leaf", "form/3", "symmetry/2", "corners/2", "pgd_leaf"}
    missed = {name: round(margin, 4) for name, margin in margins.items() if margin <= 0}
    assert not missed, f"bars missed by {missed} (report: {base_model.report['clean']})"
    # Recompute on a sample of the test split, independently of the cached report.
    test = embedded.split("test").subset(400)
    classifier = ZeroShotClassifier(base_model.loaded, forest).eval()
    clean = level_accuracy(classifier, test.images, test.labels)
    assert clean[forest.trees[0].name][0] >= LEAF_BAR
    for tree in forest.trees:
        assert clean[tree.name][tree.depth] >= TOP_LEVEL_BAR, tree.name
    attacked = attacked_accuracy(
        classifier,
        test.images[:200],
        test.labels[:200],
        AttackSettings(eps=8 / 255, steps=10),
        tree=forest.trees[0].name,
    )
    assert attacked[forest.trees[0].name][0] < PGD_LEAF_BAR


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


def test_bar_margins_read_fresh_and_json_reports_alike(forest):
    report = {
        "clean": {
            "form": {0: 0.9, 3: 0.95},
            "symmetry": {0: 0.9, 2: 0.85},
            "corners": {0: 0.9, 2: 1.0},
        },
        "pgd_leaf": {"leaf": 0.05},
    }
    expected = {
        "leaf": 0.1,
        "form/3": 0.05,
        "symmetry/2": -0.05,
        "corners/2": 0.1,
        "pgd_leaf": 0.15,
    }
    as_json = json.loads(json.dumps(report))  # JSON turns the levels into strings
    for margins in (bar_margins(report, forest), bar_margins(as_json, forest)):
        assert margins == pytest.approx(expected)


def _key(**changes):
    from trainables.hierarchy.shipped import load_shipped
    from trainables.pretrain import PretrainSettings

    forest = changes.pop("forest", None) or load_shipped("embedded")
    dataset_key = changes.pop("dataset_key", "d0")
    return base_model_key(PretrainSettings(**changes), dataset_key, forest)


def test_base_model_key_changes_with_everything_that_decides_the_weights(monkeypatch):
    from trainables.hierarchy.shipped import load_shipped
    from trainables.hierarchy.tree import Forest

    reference = _key()
    assert _key() == reference
    assert _key(seed=1) != reference
    assert _key(steps=999) != reference
    assert _key(dataset_key="d1") != reference
    # Another grouping of the same leaves gives other captions.
    embedded = load_shipped("embedded")
    assert _key(forest=Forest([embedded.trees[1], embedded.trees[0], embedded.trees[2]])) != (
        reference
    )
    assert _key(forest=Forest(embedded.trees[:2])) != reference
    # Any edit of the pretraining code, and another torch or open_clip.
    monkeypatch.setattr(
        pretrain, "PRETRAIN_SOURCES", (*pretrain.PRETRAIN_SOURCES, "trainables.model")
    )
    assert _key() != reference
    monkeypatch.undo()
    monkeypatch.setattr(torch, "__version__", "0.0.1")
    assert _key() != reference


def test_source_digest_follows_every_edit_of_the_source(tmp_path, monkeypatch):
    from trainables.cache import source_digest

    module = tmp_path / "rs_digest_probe.py"
    module.write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    first = source_digest("rs_digest_probe")
    assert source_digest("rs_digest_probe") == first
    module.write_text("X = 1  # a comment\n")
    assert source_digest("rs_digest_probe") != first
    with pytest.raises(ValueError, match="no source file"):
        source_digest("rs_no_such_module")


def test_the_dataset_key_covers_the_rendering_code(monkeypatch):
    from trainables.data import embedded
    from trainables.data.embedded import EmbeddedSpec

    reference = EmbeddedSpec().key()
    monkeypatch.setattr(embedded, "RENDER_SOURCES", ("trainables.data.embedded",))
    assert EmbeddedSpec().key() != reference


def test_pretraining_is_bitwise_reproducible_at_a_fixed_thread_count(embedded, forest):
    from trainables.backbone import EMBEDDED_ARCH, create_architecture
    from trainables.pretrain import PretrainSettings, pretrain

    settings = PretrainSettings(steps=3, batch_size=32, warmup_steps=1, seed=5)
    train = embedded.split("train").subset(512)
    states = []
    for _ in range(2):
        with torch.random.fork_rng():
            torch.manual_seed(settings.seed)
            loaded = create_architecture(EMBEDDED_ARCH)
        timing = pretrain(loaded, forest, train, settings)
        assert timing["threads"] == torch.get_num_threads()
        states.append(loaded.model.state_dict())
    for name, value in states[0].items():
        assert torch.equal(value, states[1][name]), name
