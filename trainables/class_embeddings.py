"""Class embeddings of a CLIP model: the template-ensembled text embeddings of class names, the
input of trees built from embeddings (:mod:`trainables.hierarchy.embedding_trees`)."""

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
