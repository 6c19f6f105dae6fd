"""Training captions generated from the class trees.

Superclass prompts only work if some captions name *only* the superclass ("a photo of a
polygon."): with every caption naming the leaf, top-level zero-shot accuracy stays below chance.
So each image gets one of three kinds of caption:

* leaf: "a photo of a circle.";
* context: "a photo of a circle, a kind of oval." (leaf and one ancestor of one tree);
* superclass: "a photo of a oval." (only an ancestor, at any level of any tree).

Every caption also knows which leaves it truthfully describes (:attr:`CaptionBank.describes`), so
that the contrastive loss can treat all true captions in a batch as positives.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from trainables.errors import must

CAPTION_TEMPLATES: tuple[str, ...] = ("a photo of a {}.", "a picture of a {}.", "a {}.")
CONTEXT_TEMPLATE = "a photo of a {leaf}, a kind of {ancestor}."


@dataclass(frozen=True)
class CaptionBank:
    """All captions of a forest, their truth table, and per-leaf caption choices.

    Attributes:
        captions: every distinct caption string.
        describes: bool [n_captions, n_leaves]; True where the caption is true of the leaf.
        leaf_choices / context_choices / super_choices: per leaf, the caption indices of each
            kind that may be drawn for an image of that leaf.
    """

    captions: tuple[str, ...]
    describes: torch.Tensor
    leaf_choices: tuple[tuple[int, ...], ...]
    context_choices: tuple[tuple[int, ...], ...]
    super_choices: tuple[tuple[int, ...], ...]

    @classmethod
    def from_forest(cls, forest, *, templates: Sequence[str] = CAPTION_TEMPLATES) -> CaptionBank:
        leaf_names = forest.trees[0].level_names(0)
        num_leaves = len(leaf_names)
        index: dict[str, int] = {}
        truth: list[set[int]] = []

        def add(caption: str, leaves: set[int]) -> int:
            if caption not in index:
                index[caption] = len(truth)
                truth.append(set())
            truth[index[caption]].update(leaves)
            return index[caption]

        leaf_choices = [
            [add(t.format(name), {i}) for t in templates] for i, name in enumerate(leaf_names)
        ]
        context_choices: list[list[int]] = [[] for _ in range(num_leaves)]
        super_choices: list[list[int]] = [[] for _ in range(num_leaves)]
        for tree in forest.trees:
            for level in range(1, tree.depth + 1):
                node_of_leaf = tree.leaf_to_node(level).tolist()
                names = tree.level_names(level)
                for leaf, node in enumerate(node_of_leaf):
                    ancestor = names[node]
                    if ancestor == leaf_names[leaf]:
                        continue  # a shallow leaf padded as its own ancestor adds no caption
                    members = {i for i, n in enumerate(node_of_leaf) if n == node}
                    context = CONTEXT_TEMPLATE.format(leaf=leaf_names[leaf], ancestor=ancestor)
                    context_choices[leaf].append(add(context, {leaf}))
                    super_choices[leaf].extend(add(t.format(ancestor), members) for t in templates)
        describes = torch.zeros(len(truth), num_leaves, dtype=torch.bool)
        for caption, leaves in enumerate(truth):
            describes[caption, sorted(leaves)] = True
        return cls(
            captions=tuple(index),
            describes=describes,
            leaf_choices=tuple(map(tuple, leaf_choices)),
            context_choices=_or_leaf(context_choices, leaf_choices),
            super_choices=_or_leaf(super_choices, leaf_choices),
        )

    def sample(
        self,
        labels: torch.Tensor,
        generator: torch.Generator,
        *,
        super_fraction: float = 0.2,
        context_fraction: float = 0.2,
    ) -> torch.Tensor:
        """One caption index per label: superclass-only, context or leaf caption at random."""
        if not 0 <= super_fraction + context_fraction <= 1:
            raise must(
                "super_fraction + context_fraction", "in [0, 1]", super_fraction + context_fraction
            )
        kind = torch.rand(len(labels), generator=generator)
        pick = torch.rand(len(labels), generator=generator)
        chosen = []
        for label, u, v in zip(labels.tolist(), kind.tolist(), pick.tolist(), strict=True):
            if u < super_fraction:
                options = self.super_choices[label]
            elif u < super_fraction + context_fraction:
                options = self.context_choices[label]
            else:
                options = self.leaf_choices[label]
            chosen.append(options[int(v * len(options))])
        return torch.tensor(chosen, dtype=torch.long)


def _or_leaf(
    choices: list[list[int]], leaf_choices: list[list[int]]
) -> tuple[tuple[int, ...], ...]:
    """Per leaf, its choices, or its leaf captions when it has none (a tree of leaves only)."""
    return tuple(tuple(own or leaf) for own, leaf in zip(choices, leaf_choices, strict=True))
