"""Training captions for the base model, composed from shape trees and image attributes.

Each image of the pretraining world shows a shape with a colour, a size and a background, some
of which are named (:mod:`trainables.data.embedded`). Its caption names what the image shows at
one level of detail:

* the shape part is the shape itself ("circle"), one of its superclasses in any tree
  ("oval": superclass prompts only work if some captions name *only* the superclass), the shape
  with one ancestor ("circle, a kind of oval"), or just "shape" when an attribute is named;
* each named attribute is added with some probability: "a photo of a small red circle on a
  dotted background."

A caption is a :class:`Caption` key; :meth:`WorldCaptions.truth` says for every (image, caption)
pair of a batch whether the caption is true, false or unknown (it names an attribute the image
has no name for, such as the colour of a randomly coloured shape). Unknown pairs are left out of
the contrastive loss instead of counted as false.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch

from trainables.errors import must

CAPTION_TEMPLATES: tuple[str, ...] = ("a photo of a {}.", "a picture of a {}.", "a {}.")
#: Attribute columns after the shape, as in the embedded datasets' attribute table.
NAMED_ATTRIBUTES: tuple[str, ...] = ("colour", "size", "background")
UNNAMED = -1
GENERIC_NOUN = "shape"


class Caption(NamedTuple):
    """One caption: a shape node (index into :attr:`WorldCaptions.nodes`), attribute indices
    (``UNNAMED`` when the caption does not name them), a template, and whether it is a
    "leaf, a kind of ancestor" caption (``context`` is then the ancestor's node)."""

    node: int
    colour: int
    size: int
    background: int
    template: int
    context: int = UNNAMED


@dataclass(frozen=True)
class CaptionMix:
    """How often each kind of shape part is drawn, and how often a named attribute is named."""

    super_fraction: float = 0.2
    context_fraction: float = 0.2
    attribute_rate: float = 0.5
    generic_fraction: float = 0.15  # of captions naming an attribute: say only "shape"

    def __post_init__(self):
        if not 0 <= self.super_fraction + self.context_fraction <= 1:
            raise must(
                "super_fraction + context_fraction",
                "in [0, 1]",
                self.super_fraction + self.context_fraction,
            )
        for name in ("attribute_rate", "generic_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise must(name, "in [0, 1]", getattr(self, name))


class WorldCaptions:
    """Caption vocabulary and truth of a world of shapes, trees and named attributes.

    Args:
        shapes: every shape name, in shape-id order.
        trees: class trees whose leaves are shapes (each over any subset of ``shapes``).
        attribute_names: the names of each of :data:`NAMED_ATTRIBUTES`, in index order.
    """

    def __init__(
        self,
        shapes: Sequence[str],
        trees: Sequence,
        attribute_names: Mapping[str, Sequence[str]],
        *,
        templates: Sequence[str] = CAPTION_TEMPLATES,
    ):
        missing = [name for name in NAMED_ATTRIBUTES if name not in attribute_names]
        if missing:
            raise must("attribute_names", f"names for {list(NAMED_ATTRIBUTES)}", missing)
        self.shapes = tuple(shapes)
        self.templates = tuple(templates)
        self.attribute_names = {name: tuple(attribute_names[name]) for name in NAMED_ATTRIBUTES}
        shape_id = {name: i for i, name in enumerate(self.shapes)}
        nodes: dict[str, set[int]] = {GENERIC_NOUN: set(range(len(self.shapes)))}
        for name in self.shapes:
            nodes[name] = {shape_id[name]}
        ancestors: list[list[str]] = [[] for _ in self.shapes]
        for tree in trees:
            leaves = tree.level_names(0)
            unknown = [leaf for leaf in leaves if leaf not in shape_id]
            if unknown:
                raise must(f"leaves of tree `{tree.name}`", "shapes of the world", unknown)
            for level in range(1, tree.depth + 1):
                names = tree.level_names(level)
                for leaf, node in zip(leaves, tree.leaf_to_node(level).tolist(), strict=True):
                    ancestor = names[node]
                    if ancestor == leaf:
                        continue  # a shallow leaf padded as its own ancestor adds no caption
                    nodes.setdefault(ancestor, set()).add(shape_id[leaf])
                    if ancestor not in ancestors[shape_id[leaf]]:
                        ancestors[shape_id[leaf]].append(ancestor)
        self.nodes = tuple(nodes)
        node_id = {name: i for i, name in enumerate(self.nodes)}
        #: bool [n_nodes, n_shapes]: True where the node names the shape.
        self.members = torch.zeros(len(self.nodes), len(self.shapes), dtype=torch.bool)
        for name, members in nodes.items():
            self.members[node_id[name], sorted(members)] = True
        self.ancestors = tuple(tuple(node_id[a] for a in chain) for chain in ancestors)
        self.shape_nodes = tuple(node_id[name] for name in self.shapes)

    # -- text ------------------------------------------------------------------------------

    def text(self, caption: Caption) -> str:
        noun = self.nodes[caption.node]
        if caption.context != UNNAMED:
            return f"a photo of a {noun}, a kind of {self.nodes[caption.context]}."
        words = []
        if caption.size != UNNAMED:
            words.append(self.attribute_names["size"][caption.size])
        if caption.colour != UNNAMED:
            words.append(self.attribute_names["colour"][caption.colour])
        phrase = " ".join([*words, noun])
        if caption.background != UNNAMED:
            phrase += f" on a {self.attribute_names['background'][caption.background]} background"
        return self.templates[caption.template].format(phrase)

    # -- sampling and truth ----------------------------------------------------------------

    def sample(
        self, attributes: torch.Tensor, generator: torch.Generator, mix: CaptionMix
    ) -> list[Caption]:
        """One true caption per image; ``attributes`` is int64 ``[B, 4]`` (shape first)."""
        draws = torch.rand(len(attributes), 8, generator=generator).tolist()
        captions = []
        for row, u in zip(attributes.tolist(), draws, strict=True):
            shape, named = row[0], row[1:]
            template = int(u[1] * len(self.templates))
            chain = self.ancestors[shape]
            if u[0] < mix.super_fraction and chain:
                node = chain[int(u[2] * len(chain))]
            elif u[0] < mix.super_fraction + mix.context_fraction and chain:
                context = chain[int(u[2] * len(chain))]
                captions.append(Caption(self.shape_nodes[shape], -1, -1, -1, 0, context))
                continue
            else:
                node = self.shape_nodes[shape]
            said = [
                value if value != UNNAMED and u[3 + i] < mix.attribute_rate else UNNAMED
                for i, value in enumerate(named)
            ]
            if any(value != UNNAMED for value in said) and u[6] < mix.generic_fraction:
                node = 0  # "a photo of a red shape."
            captions.append(Caption(node, *said, template))
        return captions

    def truth(
        self, attributes: torch.Tensor, captions: Sequence[Caption]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(positive, known)``, both bool ``[B, U]`` over images and captions.

        ``positive``: the caption is true of the image. ``known``: the caption names nothing the
        image leaves unnamed; unknown pairs are neither positives nor negatives.
        """
        table = torch.tensor([list(c) for c in captions], dtype=torch.long).view(-1, 6)
        positive = self.members[table[:, 0]][:, attributes[:, 0]].t()
        known = torch.ones_like(positive)
        for column in range(1, 4):
            said = table[:, column][None, :]
            has = attributes[:, column][:, None]
            mentioned = said != UNNAMED
            known &= ~mentioned | (has != UNNAMED)
            positive &= ~mentioned | (said == has)
        return positive & known, known
