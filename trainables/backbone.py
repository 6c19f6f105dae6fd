"""CLIP architectures and weights: open_clip models by name, the embedded architecture, weight
files, and pretrained tags resolved from the local Hugging Face cache (offline, a tag whose
weights are not there fails at once with a hint, never waiting on network retries).

:func:`trainables.clip_loader.load_clip` is the one entry point for a model a user names; this
module knows nothing of the embedded base model's pretraining (:mod:`trainables.pretrain`).
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from trainables.errors import UserInputError, must
from trainables.readers import exists, expanded, is_file, load_weights_file

EMBEDDED = "embedded"
#: The open_clip architecture of the embedded base model (a config shipped in model_configs/).
EMBEDDED_ARCH = "RS-TinyRN-32"
_CONFIG_DIR = Path(__file__).parent / "model_configs"
_NETWORK_PROBE_TIMEOUT_S = 3.0
# The files open_clip looks for in a hub repository, in its order of preference.
_HUB_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


@dataclass
class LoadedClip:
    """An open_clip model with what a zero-shot classifier needs around it."""

    model: nn.Module
    tokenizer: Any
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    image_size: int
    name: str
    pretrained: str | None


def register_configs() -> None:
    """Make the shipped model configs (the embedded base) known to open_clip's factory."""
    import open_clip

    if EMBEDDED_ARCH not in open_clip.list_models():
        open_clip.add_model_config(_CONFIG_DIR)


def available_models() -> list[str]:
    register_configs()
    import open_clip

    return [EMBEDDED, *open_clip.list_models()]


def create_architecture(name: str, *, quick_gelu: bool = False) -> LoadedClip:
    """A randomly initialised open_clip model of architecture ``name`` (no weights loaded).

    ``quick_gelu`` builds the QuickGELU variant that OpenAI's weights were trained with.
    """
    register_configs()
    import open_clip

    if name not in open_clip.list_models():
        raise must(
            "model.name",
            f"`{EMBEDDED}` or an open_clip model name such as ViT-B-32 or RN50 "
            "(all names: open_clip.list_models())",
            name,
        )
    # open_clip warns that no weights were loaded; that is the intent here.
    logging.getLogger().disabled, was_disabled = True, logging.getLogger().disabled
    try:
        model = open_clip.create_model(name, pretrained=None, force_quick_gelu=quick_gelu)
    finally:
        logging.getLogger().disabled = was_disabled
    return _wrap(model, name, None)


def _wrap(model: nn.Module, name: str, pretrained: str | None) -> LoadedClip:
    import open_clip

    visual = model.visual
    # Convolutions run about a quarter faster in channels-last layout on CPU (measured on the
    # embedded ResNet, training and attacks alike); weights are saved contiguous all the same.
    visual.to(memory_format=torch.channels_last)
    image_size = visual.image_size
    if isinstance(image_size, (tuple, list)):
        image_size = image_size[0]
    return LoadedClip(
        model=model,
        tokenizer=open_clip.get_tokenizer(name),
        mean=tuple(getattr(visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN),
        std=tuple(getattr(visual, "image_std", None) or open_clip.OPENAI_DATASET_STD),
        image_size=int(image_size),
        name=name,
        pretrained=pretrained,
    )


def load_state_file(path: Path) -> dict[str, torch.Tensor]:
    """Read a weights file safely (:func:`trainables.readers.load_weights_file`)."""
    if not is_file(path):
        raise must("model.pretrained", "an existing weights file or an open_clip tag", str(path))
    state = load_weights_file(path)
    # Weights saved from a DDP-wrapped model carry a "module." prefix.
    return {key.removeprefix("module."): value for key, value in state.items()}


def load_weights(loaded: LoadedClip, path: Path) -> LoadedClip:
    state = load_state_file(path)
    try:
        missing, unexpected = loaded.model.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shape mismatches
        first = str(error).strip().splitlines()[-1].strip()
        raise UserInputError(
            f"weights file {path} does not fit model `{loaded.name}`: {first}"
        ) from None
    if missing or unexpected:
        raise UserInputError(
            f"weights file {path} does not fit model `{loaded.name}`: "
            f"{len(missing)} missing keys (e.g. {missing[:2]}), "
            f"{len(unexpected)} unexpected keys (e.g. {unexpected[:2]})"
        )
    loaded.pretrained = str(path)
    return loaded


def _hub_reachable(endpoint: str) -> bool:
    """One short TCP probe, so that offline use fails in seconds rather than after retries."""
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=_NETWORK_PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def _resolve_pretrained_tag(name: str, tag: str) -> str:
    """The argument to hand open_clip: a cached local file when there is one, else the tag."""
    import open_clip

    tags = open_clip.list_pretrained_tags_by_model(name)
    if tag not in tags:
        shown = ", ".join(tags) or "none"
        raise must("model.pretrained", f"a tag of `{name}` ({shown}) or a weights file", tag)
    cfg = open_clip.get_pretrained_cfg(name, tag)
    hub_id = cfg.get("hf_hub", "")
    if hub_id:
        from huggingface_hub import try_to_load_from_cache

        # hf_hub is "org/repo/" or "org/repo/filename".
        parts = hub_id.strip("/").split("/")
        repo_id, filename = "/".join(parts[:2]), "/".join(parts[2:])
        for candidate in [filename] if filename else _HUB_WEIGHT_FILES:
            cached = try_to_load_from_cache(repo_id, candidate)
            if isinstance(cached, str):
                return cached
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    if os.environ.get("HF_HUB_OFFLINE") or not _hub_reachable(endpoint):
        raise UserInputError(
            f"cannot download pretrained weights `{tag}` for `{name}`: {endpoint} is not "
            f"reachable from this machine. Download them where there is internet and pass the "
            f"file instead: model.pretrained=/path/to/open_clip_model.safetensors"
        )
    return tag


def uses_quick_gelu(name: str, pretrained: str | None) -> bool:
    """Whether open_clip builds ``name`` with QuickGELU for the pretrained tag (no download)."""
    if name == EMBEDDED or pretrained is None:
        return False
    import open_clip

    try:
        return bool(open_clip.get_pretrained_cfg(name, pretrained).get("quick_gelu", False))
    except Exception:  # a weights file rather than a tag: the architecture's own activation
        return False


def pretrained_file(name: str, pretrained: str | None) -> Path | None:
    """The weights file ``pretrained`` names for model ``name``; None for a tag or no weights.

    The embedded model takes only files; other models take a file when the path exists or ends
    like a weights file, and an open_clip tag otherwise.
    """
    if pretrained is None:
        return None
    path = expanded(pretrained)
    if name == EMBEDDED or path.suffix in {".safetensors", ".pt", ".pth", ".bin"} or exists(path):
        return path
    return None


def load_open_clip(name: str, pretrained: str | None = None) -> LoadedClip:
    """An open_clip architecture with random weights (``pretrained`` None), a local weights
    file, or an open_clip pretrained tag."""
    loaded = create_architecture(name)
    if pretrained is None:
        return loaded
    path = pretrained_file(name, pretrained)
    if path is not None:
        return load_weights(loaded, path)
    import open_clip

    source = _resolve_pretrained_tag(name, pretrained)
    # Weights trained with QuickGELU (OpenAI's) need it, also when read from a cached file.
    quick_gelu = bool(open_clip.get_pretrained_cfg(name, pretrained).get("quick_gelu", False))
    model = open_clip.create_model(name, pretrained=source, force_quick_gelu=quick_gelu)
    return _wrap(model, name, pretrained)
