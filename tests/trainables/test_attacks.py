from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainables.attacks import (
    PGD,
    UNIVERSAL,
    EmbeddingPGD,
    HierarchicalObjective,
    LevelObjective,
    check_radius_and_steps,
    hierarchical_perturbations,
)
from trainables.errors import UserInputError
from trainables.evaluation_attacks import AutoAttack
from trainables.head import HeadSettings
from trainables.model import LevelHead, ZeroShotClassifier

# -- a toy model: mechanics of the PGD loop -----------------------------------------------------


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 16), nn.ReLU(), nn.Linear(16, 5))


def _batch():
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(32, 3, 8, 8, generator=generator)
    labels = torch.randint(0, 5, (32,), generator=generator)
    return images, labels


def _grads_untouched(model: nn.Module) -> bool:
    return all(parameter.grad is None for parameter in model.parameters())


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_stays_in_the_ball_and_in_image_range(norm):
    model = _model()
    images, labels = _batch()
    eps = 8 / 255 if norm == "linf" else 0.5
    adversarial = PGD(model, eps=eps, steps=5, norm=norm)(images, labels)
    delta = adversarial - images
    assert adversarial.min() >= 0 and adversarial.max() <= 1
    if norm == "linf":
        assert delta.abs().max() <= eps + 1e-6
    else:
        assert delta.flatten(1).norm(dim=1).max() <= eps + 1e-5
    assert delta.abs().max() > 0


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_raises_the_attacked_loss(norm):
    model = _model()
    images, labels = _batch()
    eps = 8 / 255 if norm == "linf" else 0.5
    clean_loss = F.cross_entropy(model(images), labels)
    adversarial = PGD(model, eps=eps, steps=10, norm=norm, random_start=False)(images, labels)
    assert F.cross_entropy(model(adversarial), labels) > clean_loss + 1e-3


def test_pgd_leaves_parameter_grads_and_mode_untouched():
    model = _model()
    model.train()
    images, labels = _batch()
    PGD(model, eps=4 / 255, steps=3)(images, labels)
    assert _grads_untouched(model)
    assert model.training
    # Existing gradients are not modified either.
    F.cross_entropy(model(images), labels).backward()
    before = [parameter.grad.clone() for parameter in model.parameters()]
    PGD(model, eps=4 / 255, steps=3)(images, labels)
    assert all(torch.equal(b, p.grad) for b, p in zip(before, model.parameters(), strict=True))


def test_pgd_is_reproducible_with_a_generator():
    model = _model()
    images, labels = _batch()
    runs = [
        PGD(model, eps=4 / 255, steps=2, generator=torch.Generator().manual_seed(3))(images, labels)
        for _ in range(2)
    ]
    assert torch.equal(runs[0], runs[1])


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"eps": 0, "steps": 3}, "eps"),
        ({"eps": 0.1, "steps": 0}, "steps"),
        ({"eps": 0.1, "steps": 1, "norm": "l1"}, "norm"),
        ({"eps": 0.1, "steps": 1, "step_size": 0}, "step_size"),
        ({"eps": 0.1, "steps": 1, "text_eps": -1.0}, "text_eps"),
        # A plain module has no text embeddings to perturb.
        ({"eps": 0.1, "steps": 1, "text_eps": 1e-3}, "text_eps"),
    ],
)
def test_pgd_rejects_bad_settings(kwargs, field):
    with pytest.raises(UserInputError, match=f"`{field}` must be"):
        PGD(_model(), **kwargs)


def test_pgd_restores_each_submodule_mode():
    model = _model()
    model.train()
    model[1].eval()  # a frozen part stays frozen after the attack
    images, labels = _batch()
    PGD(model, eps=4 / 255, steps=1)(images, labels)
    assert model.training and not model[1].training and model[3].training


def test_pgd_passes_model_kwargs_and_hands_the_raw_output_to_the_objective():
    class Tagged(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = _model()

        def forward(self, images, *, tag):
            return {"tag": tag, "logits": self.net(images)}

    seen = []

    def objective(output, labels):
        seen.append(output["tag"])
        return F.cross_entropy(output["logits"], labels)

    images, labels = _batch()
    PGD(Tagged(), eps=4 / 255, steps=2, loss=objective, model_kwargs={"tag": "x"})(images, labels)
    assert seen == ["x", "x"]


# -- the zero-shot classifier: objectives, text perturbation, strategies ------------------------


@pytest.fixture()
def classifier(tiny_clip, forest):
    return ZeroShotClassifier(tiny_clip, forest)


def _images(n: int = 6, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, 32, 32, generator=generator)
    labels = torch.randint(0, 20, (n,), generator=generator)
    return images, labels


def _by_hand(logits, labels, forest, tree_name, level):
    """A level's cross-entropy straight from the tree: the level's slot and the leaf's ancestor."""
    tree = forest[tree_name]
    start = 20 if level else 0  # the leaves come first, then each tree's levels in order
    if level:
        for other in forest.trees:
            for other_level in range(1, other.depth + 1):
                if (other.name, other_level) == (tree_name, level):
                    break
                start += len(other.level_nodes(other_level))
            else:
                continue
            break
    size = len(tree.level_nodes(level))
    targets = tree.leaf_to_node(level).long()[labels]
    return F.cross_entropy(logits[:, start : start + size], targets)


def test_objectives_equal_a_direct_computation(classifier, forest):
    images, labels = _images()
    with torch.no_grad():
        output = classifier(images, return_embeddings=True)
    logits = output.logits
    layout = classifier.layout
    for tree in forest.trees:
        for level in range(tree.depth + 1):
            expected = _by_hand(logits, labels, forest, tree.name, level)
            got = LevelObjective(layout, tree.name, level)(logits, labels)
            torch.testing.assert_close(got, expected)
    linear = sum(
        (1 - level / (tree.depth + 1)) * _by_hand(logits, labels, forest, tree.name, level)
        for tree in forest.trees
        for level in range(tree.depth + 1)
    )
    torch.testing.assert_close(HierarchicalObjective(layout)(logits, labels), linear)
    # The objectives read a HeadOutput as well as plain logits.
    torch.testing.assert_close(HierarchicalObjective(layout)(output, labels), linear)
    uniform = sum(_by_hand(logits, labels, forest, "symmetry", level) for level in range(3))
    subset = HierarchicalObjective(layout, trees=["symmetry"], weights="uniform")
    torch.testing.assert_close(subset(logits, labels), uniform)


@pytest.mark.parametrize(
    "kwargs, field",
    [({"trees": ["nope"]}, "trees"), ({"trees": []}, "trees"), ({"weights": "cubic"}, "weights")],
)
def test_hierarchical_objective_rejects_bad_settings(classifier, kwargs, field):
    with pytest.raises(UserInputError, match=f"`{field}` must be"):
        HierarchicalObjective(classifier.layout, **kwargs)


@pytest.mark.parametrize("geometry", ["euclidean", "hyperbolic"])
def test_joint_text_perturbation_stays_in_both_balls(tiny_clip, forest, geometry):
    head = HeadSettings(geometry=geometry, train_text_projection=True)
    classifier = ZeroShotClassifier(tiny_clip, forest, head=head)
    classifier.freeze_for_finetuning()
    classifier.train()
    images, labels = _images()
    objective = HierarchicalObjective(classifier.layout)
    eps, text_eps = 4 / 255, 0.05
    pgd = PGD(
        classifier,
        eps=eps,
        steps=3,
        loss=objective,
        text_eps=text_eps,
        generator=torch.Generator().manual_seed(0),
    )
    adversarial, text_delta = pgd.perturb_with_text(images, labels)
    assert text_delta.shape == classifier.text_delta_shape
    assert 0 < text_delta.abs().max() <= text_eps + 1e-7
    assert (adversarial - images).abs().max() <= eps + 1e-6
    assert adversarial.min() >= 0 and adversarial.max() <= 1
    with torch.no_grad():
        clean = objective(classifier(images), labels)
        image_only = objective(classifier(adversarial), labels)
        joint = objective(classifier(adversarial, text_delta=text_delta), labels)
    assert joint >= image_only > clean
    assert _grads_untouched(classifier) and classifier.training and classifier.clip.training
    # The plain call still returns images only.
    assert pgd(images, labels).shape == images.shape


def test_universal_pgd_raises_the_hierarchical_objective(classifier):
    images, labels = _images()
    objective = HierarchicalObjective(classifier.layout)
    (result,) = hierarchical_perturbations(
        classifier, images, labels, strategy="universal", eps=8 / 255, steps=3
    ).values()
    with torch.no_grad():
        assert objective(classifier(result.images), labels) > objective(classifier(images), labels)
    assert result.text_delta is None


def test_strategies_return_one_batch_per_attacked_level(classifier):
    images, labels = _images(n=2)
    settings = {"eps": 4 / 255, "steps": 1}
    leaf = hierarchical_perturbations(classifier, images, labels, strategy="leaf", **settings)
    assert list(leaf) == [("form", 0)]
    per_level = hierarchical_perturbations(
        classifier, images, labels, strategy="per_level", trees=["form", "corners"], **settings
    )
    expected = [("form", level) for level in range(4)] + [("corners", level) for level in range(3)]
    assert set(per_level) == set(expected)
    assert per_level[("form", 0)] is per_level[("corners", 0)]  # the shared leaf level, once
    for result in per_level.values():
        assert result.images.shape == images.shape
        assert (result.images - images).abs().max() <= 4 / 255 + 1e-6


def test_universal_strategy_uses_a_given_objective_on_the_full_output(classifier):
    images, labels = _images(n=2)
    seen = []

    def objective(output, labels):
        seen.append(type(output).__name__)
        return output.logits.logsumexp(-1).mean()

    result = hierarchical_perturbations(
        classifier,
        images,
        labels,
        strategy="universal",
        eps=4 / 255,
        steps=2,
        text_eps=2e-4,
        objective=objective,
        model_kwargs={"return_embeddings": True},
    )
    assert seen == ["HeadOutput", "HeadOutput"]
    assert result[UNIVERSAL].text_delta.abs().max() <= 2e-4 + 1e-9


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"strategy": "random"}, "strategy"),
        ({"strategy": "leaf", "objective": F.cross_entropy}, "objective"),
        ({"strategy": "leaf", "trees": ["nope"]}, "trees"),
    ],
)
def test_strategies_reject_bad_settings(classifier, kwargs, field):
    images, labels = _images(n=2)
    with pytest.raises(UserInputError, match=f"`{field}` must be"):
        hierarchical_perturbations(classifier, images, labels, eps=0.1, steps=1, **kwargs)


def test_embedding_pgd_pushes_features_away_within_the_ball(classifier):
    classifier.train()
    images, _ = _images()
    with torch.no_grad():
        targets = classifier.encode_images(images)
    eps = 4 / 255
    attack = EmbeddingPGD(
        classifier.encode_images, eps=eps, steps=3, generator=torch.Generator().manual_seed(0)
    )
    adversarial = attack(images, targets)
    assert (adversarial - images).abs().max() <= eps + 1e-6
    assert adversarial.min() >= 0 and adversarial.max() <= 1
    with torch.no_grad():
        distance = EmbeddingPGD.distance(classifier.encode_images(adversarial), targets)
    assert distance > 1e-6  # the clean distance is zero
    assert _grads_untouched(classifier) and classifier.training and classifier.clip.training


def test_embedding_pgd_beats_its_random_start(classifier):
    images, _ = _images()
    with torch.no_grad():
        targets = classifier.encode_images(images)
    distances = []
    for steps in (1, 4):
        attack = EmbeddingPGD(
            classifier.encode_images,
            eps=4 / 255,
            steps=steps,
            generator=torch.Generator().manual_seed(0),
        )
        with torch.no_grad():
            adversarial = attack(images, targets)
            distances.append(EmbeddingPGD.distance(classifier.encode_images(adversarial), targets))
    assert distances[1] > distances[0]


# -- the pretrained base model: level attacks, AutoAttack, parity with torchattacks -------------


@pytest.fixture(scope="module")
def trained(base_model, embedded, forest):
    classifier = ZeroShotClassifier(base_model.loaded, forest)
    test = embedded.split("test")
    return classifier, test.float_images()[:64], test.labels[:64]


def test_a_level_attack_raises_its_level_more_than_the_leaf_attack(trained):
    classifier, images, labels = trained
    images, labels = images[:32], labels[:32]
    layout = classifier.layout
    objective = LevelObjective(layout, "form", 2)

    def attacked(level_objective):
        generator = torch.Generator().manual_seed(0)
        pgd = PGD(classifier, eps=4 / 255, steps=3, loss=level_objective, generator=generator)
        with torch.no_grad():
            return objective(classifier(pgd(images, labels)), labels)

    with torch.no_grad():
        clean = objective(classifier(images), labels)
    leaf = attacked(LevelObjective(layout, "form", 0))
    level = attacked(objective)
    assert level > leaf > clean


def _accuracy(model, images, labels) -> float:
    with torch.no_grad():
        return (model(images).argmax(1) == labels).float().mean().item()


def test_autoattack_lowers_accuracy_within_the_ball(trained):
    pytest.importorskip("torchattacks")
    classifier, images, labels = trained
    images, labels = images[:32], labels[:32]
    head = LevelHead(classifier, "form", 0)
    head.train()
    classifier.clip.transformer.eval()  # a frozen part stays frozen
    try:
        rng = torch.random.get_rng_state()
        eps = 8 / 255
        adversarial = AutoAttack(head, eps=eps, steps=10)(images, labels)
        assert torch.equal(torch.random.get_rng_state(), rng)  # torchattacks reseeds it
        assert head.training and classifier.clip.visual.training
        assert not classifier.clip.transformer.training
    finally:
        classifier.eval()
    assert (adversarial - images).abs().max() <= eps + 1e-6
    assert adversarial.min() >= 0 and adversarial.max() <= 1
    assert _accuracy(head, adversarial, labels) < _accuracy(head, images, labels)
    assert _grads_untouched(classifier)


def test_autoattack_skips_losses_a_small_head_cannot_compute(trained):
    pytest.importorskip("torchattacks")
    classifier, images, labels = trained
    head = LevelHead(classifier, "form", 3)  # two superclasses: no (targeted) DLR loss
    attack = AutoAttack(head, eps=8 / 255, steps=2, attacks=("apgd-ce", "apgd-dlr", "apgd-t"))
    assert attack.attacks_for(2) == ("apgd-ce",)
    assert attack.attacks_for(20) == ("apgd-ce", "apgd-dlr", "apgd-t")
    targets = classifier.layout.level_targets(labels[:8], "form", 3)
    assert attack(images[:8], targets).shape == images[:8].shape
    with pytest.raises(UserInputError, match="`n_classes` must be"):
        AutoAttack(head, eps=8 / 255, n_classes=5)(images[:2], targets[:2])


def test_autoattack_settings_and_a_missing_torchattacks(trained, monkeypatch):
    head = LevelHead(trained[0], "form", 0)
    with pytest.raises(UserInputError, match="`attacks` must be"):
        AutoAttack(head, eps=0.1, attacks=("square",))
    monkeypatch.setitem(sys.modules, "torchattacks", None)  # makes the import fail
    with pytest.raises(UserInputError, match=r"`torchattacks` must be installed .*\[eval\]"):
        AutoAttack(head, eps=0.1)


def test_pgd_matches_torchattacks_pgd(trained):
    torchattacks = pytest.importorskip("torchattacks")
    classifier, images, labels = trained
    head = LevelHead(classifier, "form", 0)
    eps, step, steps = 4 / 255, 1 / 255, 10
    ours = PGD(
        head, eps=eps, steps=steps, step_size=step, generator=torch.Generator().manual_seed(0)
    )(images, labels)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        theirs = torchattacks.PGD(head, eps=eps, alpha=step, steps=steps)(images, labels)
    clean = _accuracy(head, images, labels)
    ours_accuracy, theirs_accuracy = _accuracy(head, ours, labels), _accuracy(head, theirs, labels)
    assert abs(ours_accuracy - theirs_accuracy) <= 0.1
    assert max(ours_accuracy, theirs_accuracy) < clean


@pytest.mark.parametrize(
    ("eps", "steps", "field"),
    [
        (0.0, 1, "attack.eps"),
        (float("inf"), 1, "attack.eps"),
        (float("nan"), 1, "attack.eps"),
        (True, 1, "attack.eps"),
        (0.1, 0, "attack.steps"),
        (0.1, True, "attack.steps"),
        (0.1, 2.0, "attack.steps"),
    ],
)
def test_one_check_refuses_every_bad_radius_and_step_count(eps, steps, field):
    with pytest.raises(UserInputError, match=f"`{field}` must be"):
        check_radius_and_steps(eps, steps, "attack.")


def test_the_radius_check_passes_good_values_and_skips_absent_steps():
    check_radius_and_steps(4 / 255, 10)
    check_radius_and_steps(0.5)  # a query-based attack has no steps
