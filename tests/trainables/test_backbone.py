from __future__ import annotations

import time

import pytest
import torch

from trainables.backbone import EMBEDDED_ARCH, create_architecture
from trainables.clip_loader import load_clip
from trainables.errors import UserInputError


def test_local_weights_file_round_trip(tmp_path, tiny_clip):
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in tiny_clip.model.state_dict().items()}
    save_file(state, str(tmp_path / "w.safetensors"))
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "w.pt")
    for name in ("w.safetensors", "w.pt"):
        loaded = load_clip(EMBEDDED_ARCH, str(tmp_path / name))
        for key, value in loaded.model.state_dict().items():
            assert torch.equal(value, state[key]), key
        assert loaded.pretrained == str(tmp_path / name)


def test_torch_files_are_read_without_unpickling_objects(tmp_path):
    import argparse

    torch.save({"x": argparse.Namespace(payload=1)}, tmp_path / "evil.pt")
    with pytest.raises(UserInputError, match="holds Python objects other than tensors"):
        load_clip(EMBEDDED_ARCH, str(tmp_path / "evil.pt"))


def test_weights_of_another_architecture_are_refused(tmp_path):
    torch.save({"visual.conv1.weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(UserInputError, match="does not fit model"):
        load_clip(EMBEDDED_ARCH, str(tmp_path / "other.pt"))


def test_unknown_names_and_tags_give_one_line_errors():
    with pytest.raises(UserInputError, match="`model.name` must be"):
        create_architecture("NotAModel-B-99")
    with pytest.raises(UserInputError, match="`model.pretrained` must be a tag of `RN50`"):
        load_clip("RN50", "no-such-tag")
    with pytest.raises(UserInputError, match="existing weights file"):
        load_clip("RN50", "/nonexistent/weights.pt")


def test_offline_hub_download_fails_fast_with_a_hint(monkeypatch):
    # Point the hub at a local port nothing listens on: the probe must fail at once.
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    started = time.perf_counter()
    with pytest.raises(UserInputError, match="pass the file instead"):
        load_clip("RN50", "openai")
    assert time.perf_counter() - started < 15


def test_model_configs_follow_open_clip_factory(tiny_clip):
    assert tiny_clip.image_size == 32
    assert tiny_clip.tokenizer(["a photo of a circle."]).shape == (1, 24)
    with torch.no_grad():
        features = tiny_clip.model.encode_image(torch.rand(2, 3, 32, 32))
    assert features.shape == (2, 64)


TINY_VIT = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
}


def _tiny_vit(tmp_path):
    import json

    import open_clip

    if "RS-TinyViT-Test" not in open_clip.list_models():
        (tmp_path / "RS-TinyViT-Test.json").write_text(json.dumps(TINY_VIT))
        open_clip.add_model_config(tmp_path / "RS-TinyViT-Test.json")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return create_architecture("RS-TinyViT-Test")


def test_gradient_checkpointing_trains_exactly_as_without_it(tmp_path):
    import copy

    from trainables.clip_loader import use_grad_checkpointing
    from trainables.hierarchy.shipped import load_shipped
    from trainables.methods import build_method, method_settings
    from trainables.training import OptimSettings, build_optimizer, training_step

    loaded = _tiny_vit(tmp_path)
    images, labels = torch.rand(6, 3, 32, 32), torch.arange(6) % 20
    losses, weights = [], []
    for checkpointed in (False, True):
        twin = copy.deepcopy(loaded)
        if checkpointed:
            use_grad_checkpointing(twin.model, "RS-TinyViT-Test")
            assert twin.model.visual.transformer.grad_checkpointing
        method = build_method(
            method_settings("hrz-forest"), twin, load_shipped("embedded"), calibration_images=images
        )
        optimizer = build_optimizer(method.parameters(), OptimSettings(lr=1e-3))
        losses.append(training_step(method, method.classifier, optimizer, images, labels)["loss"])
        weights.append(twin.model.visual.conv1.weight.detach().clone())
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    torch.testing.assert_close(weights[0], weights[1], rtol=1e-5, atol=1e-6)
    assert not torch.equal(weights[0], loaded.model.visual.conv1.weight)  # it did train


def test_gradient_checkpointing_needs_a_vit_image_tower(tiny_clip):
    from trainables.clip_loader import use_grad_checkpointing

    with pytest.raises(UserInputError, match="`model.grad_checkpointing` must be false"):
        use_grad_checkpointing(tiny_clip.model, EMBEDDED_ARCH)
