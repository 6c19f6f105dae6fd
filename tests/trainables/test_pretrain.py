from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from trainables import pretrain
from trainables.captions import Caption, CaptionMix
from trainables.evaluate import AttackSettings, attacked_accuracy, level_accuracy
from trainables.model import ZeroShotClassifier
from trainables.pretrain import (
    LEAF_BAR,
    PGD_LEAF_BAR,
    TOP_LEVEL_BAR,
    ZEROSHOT_ATTACK_DROP,
    ZEROSHOT_CLEAN_BAR,
    bar_margins,
    base_model_key,
    contrastive_loss,
    world_captions,
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


def test_unknown_pairs_count_neither_as_positives_nor_as_negatives():
    features = torch.eye(3)
    positives = torch.eye(3, dtype=torch.bool)
    known = torch.ones(3, 3, dtype=torch.bool)
    base = contrastive_loss(features, features, positives, torch.tensor(5.0), known)
    # Hiding a negative pair lowers the loss; the masked logit makes no NaN.
    known[0, 1] = False
    masked = contrastive_loss(features, features, positives, torch.tensor(5.0), known)
    assert torch.isfinite(masked) and masked < base
    # The same as leaving the pair out of both softmaxes by hand.
    logits = 5.0 * features @ features.t()
    hidden = logits.masked_fill(~known, float("-inf"))
    by_hand = (
        -(hidden.log_softmax(dim=1).diagonal()).mean()
        - (hidden.log_softmax(dim=0).diagonal()).mean()
    ) / 2
    assert masked.item() == pytest.approx(by_hand.item(), abs=1e-6)


@pytest.fixture(scope="module")
def world():
    from trainables.hierarchy.shipped import load_shipped
    from trainables.hierarchy.tree import as_forest

    return world_captions(
        load_shipped("embedded"), as_forest(load_shipped("embedded-heldout-shapes"))
    )


def test_world_captions_cover_every_shape_superclass_and_attribute(world, forest):
    from trainables.data.embedded_taxonomy import ALL_SHAPES, COLOURS, HELD_OUT_TREES

    assert world.shapes == ALL_SHAPES
    superclasses = {
        n for t in forest.trees for lv in range(1, t.depth + 1) for n in t.level_names(lv)
    }
    superclasses |= set(HELD_OUT_TREES["strokes"].values())
    assert superclasses | set(ALL_SHAPES) | {"shape"} == set(world.nodes)
    # A superclass node is true of exactly its members.
    oval = world.nodes.index("oval")
    assert [world.shapes[i] for i in world.members[oval].nonzero().flatten()] == [
        "circle",
        "ellipse",
        "ring",
    ]
    red, small, dotted = 0, 0, 2
    caption = Caption(world.nodes.index("circle"), red, small, dotted, 0)
    assert world.text(caption) == "a photo of a small red circle on a dotted background."
    assert list(COLOURS)[red] == "red"
    context = Caption(world.nodes.index("circle"), -1, -1, -1, 0, oval)
    assert world.text(context) == "a photo of a circle, a kind of oval."


def test_caption_truth_knows_when_an_image_has_no_name_for_an_attribute(world):
    circle, square = world.shapes.index("circle"), world.shapes.index("square")
    # [shape, colour, size, background]: a red circle, a circle of random colour, a square.
    images = torch.tensor([[circle, 0, 2, -1], [circle, -1, 2, -1], [square, 0, 2, -1]])
    captions = [
        Caption(world.nodes.index("circle"), 0, -1, -1, 0),  # "a red circle"
        Caption(world.nodes.index("shape"), 0, 2, -1, 0),  # "a large red shape"
        Caption(world.nodes.index("oval"), -1, -1, 0, 0),  # "an oval on a plain background"
    ]
    positive, known = world.truth(images, captions)
    assert positive.tolist() == [[True, True, False], [False, False, False], [False, True, False]]
    # The random colour cannot be called red or not; no background is named in any image.
    assert known.tolist() == [[True, True, False], [False, False, False], [True, True, False]]


def test_sampled_captions_are_true_of_their_images_and_follow_the_mix(world):
    from trainables.data.embedded import generate_splits
    from trainables.data.embedded_spec import embedded_spec

    spec = embedded_spec("embedded-world", n_train=600, n_val=0, n_test=0)
    _, _, attributes = generate_splits(spec, ["train"], workers=1)["train"]
    attributes = torch.from_numpy(attributes)
    mix = CaptionMix(super_fraction=0.2, context_fraction=0.2, attribute_rate=0.5)
    captions = world.sample(attributes, torch.Generator().manual_seed(0), mix)
    positive, known = world.truth(attributes, captions)
    assert bool(positive.diagonal().all()) and bool(known.diagonal().all())
    contexts = sum(c.context != -1 for c in captions) / len(captions)
    assert 0.12 < contexts < 0.28
    with_colour = [c for c, a in zip(captions, attributes.tolist(), strict=True) if a[1] != -1]
    named = sum(c.colour != -1 for c in with_colour) / len(with_colour)
    assert 0.25 < named < 0.5  # attribute_rate 0.5 of the non-context captions


def test_base_model_meets_the_zero_shot_and_attackability_bars(base_model, forest, embedded):
    margins = bar_margins(base_model.report["val"], forest)
    suite = {"embedded-heldout-shapes", "embedded-colour", "embedded-size", "embedded-background"}
    assert set(margins) == {"leaf", "form/3", "symmetry/2", "corners/2", "pgd_leaf"} | {
        f"{name}/{kind}" for name in suite for kind in ("clean", "robust")
    }
    missed = {name: round(margin, 4) for name, margin in margins.items() if margin <= 0}
    assert not missed, f"bars missed by {missed} (report: {base_model.report['val']['clean']})"
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
    from trainables.suites import evaluate_suite

    suite = evaluate_suite(
        classifier, "embedded-zeroshot", split="test", samples=150, eps=(4 / 255,), profile=False
    )
    for name, result in suite["datasets"].items():
        assert result["clean"] >= ZEROSHOT_CLEAN_BAR, name
        assert result["clean"] - result["robust"] >= ZEROSHOT_ATTACK_DROP, name


def test_second_load_comes_from_the_cache(base_model):
    from trainables.pretrain import load_or_pretrain_base

    again = load_or_pretrain_base()
    assert not again.built and again.path == base_model.path
    for key, value in again.loaded.model.state_dict().items():
        assert torch.equal(value, base_model.loaded.model.state_dict()[key]), key


def test_a_freshly_pretrained_model_carries_no_gradients(tmp_path, monkeypatch):
    from trainables.data.embedded_spec import EmbeddedSpec, embedded_spec
    from trainables.pretrain import PretrainSettings, load_or_pretrain_base

    monkeypatch.setenv("RAYSEARCH_CACHE", str(tmp_path))
    spec = EmbeddedSpec(n_train=256, n_val=20, n_test=40)
    world = embedded_spec("embedded-world", n_train=256, n_val=0, n_test=0)
    fresh = load_or_pretrain_base(
        PretrainSettings(steps=2, batch_size=32, warmup_steps=1),
        dataset_spec=spec,
        world_spec=world,
        report_samples=20,
    )
    assert fresh.built
    assert all(p.grad is None for p in fresh.loaded.model.parameters())
    assert not fresh.loaded.model.training
    # The report scores both splits, each with the zero-shot suite, settings beside the numbers.
    for split in ("val", "test"):
        section = fresh.report[split]
        assert section["samples"] == 20 and section["zeroshot"]["split"] == split
        assert len(section["zeroshot"]["datasets"]) == 4


def test_bar_margins_read_fresh_and_json_reports_alike(forest):
    report = {
        "clean": {
            "form": {0: 0.9, 3: 0.95},
            "symmetry": {0: 0.9, 2: 0.85},
            "corners": {0: 0.9, 2: 1.0},
        },
        "pgd_leaf": {"leaf": 0.05},
        "zeroshot": {"datasets": {"colours": {"clean": 0.9, "robust": 0.7}}},
    }
    expected = {
        "leaf": 0.1,
        "form/3": 0.05,
        "symmetry/2": -0.05,
        "corners/2": 0.1,
        "pgd_leaf": 0.15,
        "colours/clean": 0.9 - ZEROSHOT_CLEAN_BAR,
        "colours/robust": 0.2 - ZEROSHOT_ATTACK_DROP,
    }
    as_json = json.loads(json.dumps(report))  # JSON turns the levels into strings
    for margins in (bar_margins(report, forest), bar_margins(as_json, forest)):
        assert margins == pytest.approx(expected)


def _key(**changes):
    from trainables.hierarchy.shipped import load_shipped
    from trainables.pretrain import PretrainSettings

    forest = changes.pop("forest", None) or load_shipped("embedded")
    dataset_key = changes.pop("dataset_key", "d0")
    return base_model_key(PretrainSettings(**changes), dataset_key, [forest])


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
    from trainables.data import embedded_spec
    from trainables.data.embedded_spec import EmbeddedSpec

    reference = EmbeddedSpec().key()
    monkeypatch.setattr(embedded_spec, "RENDER_SOURCES", ("trainables.data.embedded",))
    assert EmbeddedSpec().key() != reference


def test_pretraining_is_bitwise_reproducible_at_a_fixed_thread_count(world):
    from trainables.backbone import EMBEDDED_ARCH, create_architecture
    from trainables.data.embedded import load_embedded
    from trainables.data.embedded_spec import embedded_spec
    from trainables.pretrain import PretrainSettings, pretrain

    settings = PretrainSettings(steps=3, batch_size=32, warmup_steps=1, seed=5)
    spec = embedded_spec("embedded-world", n_train=512, n_val=0, n_test=0)
    train = load_embedded(spec).split("train")
    states = []
    for _ in range(2):
        with torch.random.fork_rng():
            torch.manual_seed(settings.seed)
            loaded = create_architecture(EMBEDDED_ARCH)
        timing = pretrain(loaded, world, train, settings)
        assert timing["threads"] == torch.get_num_threads()
        states.append(loaded.model.state_dict())
    for name, value in states[0].items():
        assert torch.equal(value, states[1][name]), name
