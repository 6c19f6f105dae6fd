"""Loading any CLIP a user names: an open_clip name with a pretrained tag, local weights, or the
embedded base.

* ``load_clip("ViT-B-32", "openai")``: an open_clip architecture and pretrained tag. Offline, a
  tag whose weights are not in the local Hugging Face cache fails at once with a message telling
  the user to pass a local weights file; it never waits on network retries.
* ``load_clip("ViT-B-32", "/path/to/weights.safetensors")``: an architecture and a local file.
* ``load_clip("embedded")``: the tiny base CLIP pretrained on the embedded dataset (built once,
  then loaded from the cache; see :mod:`trainables.pretrain`).

Architectures and weight files are :mod:`trainables.backbone`'s; the embedded base model, its
recipe and its cache are :mod:`trainables.pretrain`'s. This module only chooses between them.
"""

from __future__ import annotations

from torch import nn

from trainables.backbone import EMBEDDED, LoadedClip, load_open_clip, load_weights, pretrained_file
from trainables.errors import must

__all__ = ["load_clip", "use_grad_checkpointing"]


def load_clip(name: str = EMBEDDED, pretrained: str | None = None) -> LoadedClip:
    """Load a CLIP by open_clip name and pretrained tag, by local weights, or the embedded base.

    Args:
        name: an open_clip architecture (``open_clip.list_models()``) or ``"embedded"``.
        pretrained: an open_clip pretrained tag, a path to a weights file (``.safetensors``,
            ``.pt``/``.bin`` read with ``weights_only=True``), or None (random init; for
            ``"embedded"``, None means the cached base model).
    """
    if name != EMBEDDED:
        return load_open_clip(name, pretrained)
    from trainables.pretrain import load_or_pretrain_base  # pretrains once on an empty cache

    loaded = load_or_pretrain_base().loaded
    path = pretrained_file(name, pretrained)
    return loaded if path is None else load_weights(loaded, path)


def use_grad_checkpointing(model: nn.Module, name: str) -> None:
    """Recompute the image tower's transformer activations in the backward pass instead of
    keeping them (open_clip's gradient checkpointing): less memory, more compute per step.

    Only transformer image towers support it; ``name`` (the model's) names one that does not.
    """
    tower = getattr(getattr(model, "visual", None), "transformer", None)
    if tower is None or not hasattr(tower, "grad_checkpointing"):
        raise must("model.grad_checkpointing", "false for a model without a ViT image tower", name)
    model.set_grad_checkpointing(True)
