"""Class embeddings of a CLIP model, the input of trees built from embeddings
(:mod:`trainables.hierarchy.embedding_trees`): the template-ensembled text embeddings of the
class names, or the mean image embedding of each class over a labelled sample."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from trainables.errors import must

#: Prompts encoded per forward pass (ImageNet's 1000 classes x 80 templates is 80,000).
BATCH = 256


@torch.no_grad()
def class_text_embeddings(loaded, names: Sequence[str], templates: Sequence[str]) -> np.ndarray:
    """``[len(names), dim]`` unit vectors: each name's prompts under every template, encoded by
    ``loaded``'s text tower, normalised, averaged over templates and normalised again (the
    zero-shot classifier's prototypes)."""
    if not templates or any("{}" not in template for template in templates):
        raise must("templates", "a non-empty list of texts with a {} placeholder", templates)
    model = loaded.model.eval()
    device = next(model.parameters()).device
    prompts = [template.format(name) for name in names for template in templates]
    features = []
    for start in range(0, len(prompts), BATCH):
        tokens = loaded.tokenizer(prompts[start : start + BATCH]).to(device)
        features.append(F.normalize(model.encode_text(tokens).float(), dim=-1).cpu())
    per_name = torch.cat(features).view(len(names), len(templates), -1).mean(dim=1)
    return F.normalize(per_name, dim=-1).numpy()


@torch.no_grad()
def class_image_embeddings(loaded, images: torch.Tensor, labels: torch.Tensor, classes: int):
    """``[classes, dim]`` unit vectors: the normalised mean of each class's normalised image
    embeddings over a labelled sample (uint8 ``[N, 3, S, S]`` images at the model's size); a
    class without an image in the sample is one line."""
    missing = sorted(set(range(classes)) - set(labels.tolist()))
    if missing:
        raise must("samples", f"enough images for every class (none of class {missing[0]})", "")
    model = loaded.model.eval()
    device = next(model.parameters()).device
    mean = torch.tensor(loaded.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(loaded.std, device=device).view(1, 3, 1, 1)
    sums = torch.zeros(classes, 0)
    for start in range(0, len(images), BATCH):
        batch = images[start : start + BATCH].to(device).float() / 255
        features = F.normalize(model.encode_image((batch - mean) / std).float(), dim=-1).cpu()
        if sums.shape[1] == 0:
            sums = torch.zeros(classes, features.shape[1])
        sums.index_add_(0, labels[start : start + BATCH], features)
    return F.normalize(sums, dim=-1).numpy()
