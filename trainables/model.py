"""Zero-shot heads for every level of every tree, on top of an open_clip model.

:class:`ZeroShotClassifier` makes CLIP attackable (STYLE.md, "make CLIP attackable"): it owns the
model's pixel normalisation, the image encoder and the text prototypes of every node of the
forest, and maps [0, 1] images to the logits of all levels of all trees with one matmul against
all nodes at once. Attacks and evaluators then see a plain ``images -> logits`` module.

Logit layout: the leaves come first (level 0 is shared by every tree of a forest), then each
tree's levels 1..L in forest order. :class:`HeadLayout` maps ``(tree, level)`` to its slice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from trainables.backbone import LoadedClip
from trainables.errors import must

#: The standard CLIP zero-shot prompt; the embedded base model is pretrained with it.
DEFAULT_TEMPLATES: tuple[str, ...] = ("a photo of a {}.",)


@dataclass(frozen=True)
class HeadLayout:
    """Where each ``(tree, level)`` sits in the concatenated node axis of the logits."""

    slices: dict[tuple[str, int], slice]
    names: tuple[str, ...]  # display name of every node slot, in logit order
    targets: dict[tuple[str, int], torch.Tensor]  # leaf label -> node index at that level

    @classmethod
    def from_forest(cls, forest) -> HeadLayout:
        first = forest.trees[0]
        names: list[str] = list(first.level_names(0))
        leaf_slice = slice(0, len(names))
        slices: dict[tuple[str, int], slice] = {}
        targets: dict[tuple[str, int], torch.Tensor] = {}
        for tree in forest.trees:
            slices[(tree.name, 0)] = leaf_slice
            targets[(tree.name, 0)] = torch.arange(len(forest.leaves))
            for level in range(1, tree.depth + 1):
                level_names = tree.level_names(level)
                slices[(tree.name, level)] = slice(len(names), len(names) + len(level_names))
                targets[(tree.name, level)] = tree.leaf_to_node(level).long()
                names.extend(level_names)
        return cls(slices=slices, names=tuple(names), targets=targets)

    @property
    def num_nodes(self) -> int:
        return len(self.names)

    def slice_of(self, tree: str, level: int) -> slice:
        try:
            return self.slices[(tree, level)]
        except KeyError:
            known = sorted({name for name, _ in self.slices})
            raise must(
                "level", f"a level of trees {known} within their depth", (tree, level)
            ) from None

    def level_targets(self, labels: torch.Tensor, tree: str, level: int) -> torch.Tensor:
        """Map leaf labels to node indices at ``level`` of ``tree``."""
        self.slice_of(tree, level)
        return self.targets[(tree, level)].to(labels.device)[labels]


class ZeroShotClassifier(nn.Module):
    """[0, 1] images -> cosine logits for every node of every tree, in one matmul.

    Args:
        loaded: the CLIP model with its tokenizer and normalisation (:func:`load_clip`).
        forest: the class trees; level 0 are the dataset's classes in label order.
        templates: prompt templates, ensembled per node (mean of normalised text embeddings).

    Text prototypes are computed once at construction (the text side is frozen) and stored as a
    buffer; call :meth:`refresh_prototypes` after changing the text tower.
    """

    def __init__(self, loaded: LoadedClip, forest, *, templates: Sequence[str] = DEFAULT_TEMPLATES):
        super().__init__()
        if not templates or any("{}" not in template for template in templates):
            raise must("templates", "a non-empty list of strings with a {} placeholder", templates)
        self.clip = loaded.model
        self.tokenizer = loaded.tokenizer
        self.templates = tuple(templates)
        self.forest = forest
        self.layout = HeadLayout.from_forest(forest)
        self.register_buffer("pixel_mean", torch.tensor(loaded.mean).view(1, 3, 1, 1))
        self.register_buffer("pixel_std", torch.tensor(loaded.std).view(1, 3, 1, 1))
        self.register_buffer("prototypes", torch.empty(0))
        self.refresh_prototypes()
        # Mirror the wrapped model's mode: wrapping must not switch batch-norm statistics on.
        self.train(self.clip.training)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Unnormalised image embeddings [B, D] of [0, 1] images [B, 3, H, W]."""
        return self.clip.encode_image((images - self.pixel_mean) / self.pixel_std)

    def encode_prompts(self, names: Sequence[str]) -> torch.Tensor:
        """Normalised template-ensembled text embeddings [len(names), D]."""
        device = self.pixel_mean.device
        prompts = [template.format(name) for name in names for template in self.templates]
        tokens = self.tokenizer(prompts).to(device)
        features = F.normalize(self.clip.encode_text(tokens), dim=-1)
        features = features.view(len(names), len(self.templates), -1).mean(dim=1)
        return F.normalize(features, dim=-1)

    @torch.no_grad()
    def refresh_prototypes(self) -> None:
        self.prototypes = self.encode_prompts(self.layout.names)

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.clip.logit_scale.exp().clamp(max=100.0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits [B, num_nodes] over every node slot (see :class:`HeadLayout`)."""
        features = F.normalize(self.encode_images(images), dim=-1)
        return self.logit_scale * features @ self.prototypes.t()

    def level_logits(self, logits: torch.Tensor, tree: str, level: int) -> torch.Tensor:
        return logits[:, self.layout.slice_of(tree, level)]


class LevelHead(nn.Module):
    """A view of a classifier that returns one level's logits: what a level attack targets."""

    def __init__(self, classifier: ZeroShotClassifier, tree: str, level: int):
        super().__init__()
        self.classifier = classifier
        self.tree, self.level = tree, level
        self.node_slice = classifier.layout.slice_of(tree, level)
        self.train(classifier.training)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(images)[:, self.node_slice]
