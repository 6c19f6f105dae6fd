from __future__ import annotations

import copy
import math
from dataclasses import replace

import pytest
import torch

from trainables.errors import UserInputError
from trainables.methods import METHOD_NAMES, TrainingAttack, build_method, method_settings
from trainables.training import (
    OptimSettings,
    build_optimizer,
    fit,
    shuffled_batches,
    training_step,
    warmup_cosine,
)


def _batch(n=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 32, 32, generator=generator), torch.arange(n) % 20


def _method(name, tiny_clip, forest, **attack):
    settings = method_settings(name)
    if attack:
        settings = replace(settings, attack=replace(settings.attack, **attack))
    images, _ = _batch(16, seed=9)
    return build_method(settings, tiny_clip, forest, calibration_images=images)


def _snapshot(module):
    return {name: p.detach().clone() for name, p in module.named_parameters()}


@pytest.mark.parametrize("name", [name for name in METHOD_NAMES if name != "clip"])
def test_one_step_trains_only_what_the_method_trains(name, tiny_clip, forest):
    method = _method(name, tiny_clip, forest, steps=1)
    classifier = method.classifier
    optimizer = build_optimizer(method.parameters(), OptimSettings(lr=1e-2))
    before = _snapshot(classifier)
    images, labels = _batch()
    terms = training_step(method, classifier, optimizer, images, labels)
    assert all(math.isfinite(value) for value in terms.values())
    assert terms["loss"] == pytest.approx(
        sum(value for key, value in terms.items() if key.endswith("_loss")), rel=1e-5
    )
    after = _snapshot(classifier)
    changed = {key for key in before if not torch.equal(before[key], after[key])}
    assert any(key.startswith("clip.visual.") for key in changed)
    # The text transformer and token embedding never move: their cached outputs stay valid.
    assert not any(key.startswith(("clip.transformer.", "clip.token_embedding")) for key in changed)
    assert ("clip.text_projection" in changed) == (name in ("hrz", "hrz-forest"))


@pytest.mark.parametrize("strategy", ["leaf", "per_level", "universal"])
def test_every_perturbation_strategy_trains(strategy, tiny_clip, forest):
    method = _method("hrz-forest", tiny_clip, forest, steps=1, strategy=strategy)
    optimizer = build_optimizer(method.parameters(), OptimSettings())
    images, labels = _batch()
    perturbation = method.perturb(images, labels)
    assert (perturbation.images - images).abs().max() <= method.settings.attack.eps + 1e-6
    if strategy == "per_level":
        assert set(perturbation.by_level) == set(method.classifier.layout.slices)
    else:
        assert perturbation.text_delta is not None
        assert perturbation.text_delta.abs().max() <= method.settings.attack.text_eps + 1e-9
    terms = training_step(method, method.classifier, optimizer, images, labels)
    assert math.isfinite(terms["hita_loss"])


def test_the_attack_leaves_no_gradient_on_parameters(tiny_clip, forest):
    method = _method("hrz-forest", tiny_clip, forest, steps=2)
    method.parameters()
    images, labels = _batch()
    method.perturb(images, labels)
    assert all(p.grad is None for p in method.classifier.parameters())


def test_fit_runs_the_budget_and_records_every_term(tiny_clip, forest, embedded):
    method = _method("tecoa", tiny_clip, forest, steps=1)
    split = embedded.split("train").subset(64)
    result = fit(method, split, OptimSettings(batch_size=16, epochs=2, warmup_steps=2))
    assert result.steps == 8 and len(result.history) == 2
    assert set(result.history[0]) == {"loss", "tecoa_loss"}
    capped = fit(method, split, OptimSettings(batch_size=16, epochs=5, max_steps=3))
    assert capped.steps == 3


def test_fit_is_deterministic_for_a_seed(tiny_clip, forest, embedded):
    split = embedded.split("train").subset(32)
    losses = []
    for _ in range(2):
        method = _method("hrz", copy.deepcopy(tiny_clip), forest, steps=1)
        result = fit(method, split, OptimSettings(batch_size=16, epochs=1, seed=3))
        losses.append(result.history[0]["loss"])
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


def test_plain_clip_is_not_trained(tiny_clip, forest, embedded):
    method = _method("clip", tiny_clip, forest)
    before = _snapshot(method.classifier)
    result = fit(method, embedded.split("train").subset(32), OptimSettings(batch_size=16))
    assert result.steps == 0
    assert all(torch.equal(before[k], v) for k, v in _snapshot(method.classifier).items())


def test_warmup_then_cosine_schedule():
    factors = [warmup_cosine(step, 100, 10) for step in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[9:], factors[10:], strict=False))
    assert factors[-1] < 0.01


def test_shuffled_batches_are_deterministic_full_and_disjoint():
    first = list(shuffled_batches(50, 16, seed=1, epoch=0))
    again = list(shuffled_batches(50, 16, seed=1, epoch=0))
    other = list(shuffled_batches(50, 16, seed=1, epoch=1))
    assert len(first) == 3 and all(len(batch) == 16 for batch in first)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], other[0])
    assert len(torch.cat(first).unique()) == 48


@pytest.mark.parametrize(
    ("field", "value"),
    [("lr", 0), ("epochs", 0), ("batch_size", 0), ("optimizer", "adam"), ("precision", "fp8")],
)
def test_bad_optimiser_settings_are_refused(field, value):
    with pytest.raises(UserInputError, match=f"`optim.{field}` must be"):
        OptimSettings(**{field: value})


def test_bad_method_settings_are_refused(forest, tiny_clip):
    with pytest.raises(UserInputError, match="`attack.strategy` must be"):
        TrainingAttack(strategy="per_tree")
    with pytest.raises(UserInputError, match="`method` must be"):
        method_settings("madry")
    settings = replace(method_settings("hrz"), trees=("nope",))
    with pytest.raises(UserInputError, match="`method.trees` must be"):
        build_method(settings, tiny_clip, forest)


def test_a_training_step_of_plain_clip_is_refused(tiny_clip, forest):
    method = _method("clip", tiny_clip, forest)
    images, labels = _batch()
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(UserInputError, match="`method.name` must be a method that fine-tunes"):
        training_step(method, method.classifier, optimizer, images, labels)
