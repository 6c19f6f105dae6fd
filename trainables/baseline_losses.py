"""The flat baselines' training losses (REFERENCE.md): TeCoA, PMG-AFT and FARE.

Like the hierarchical loss (:mod:`trainables.losses`), each is a small module whose ``forward``
returns named tensors (keys ending in ``_loss`` are summed by the training step) and states in
``needs`` which forward passes it uses. TeCoA is the cross-entropy of the adversarial leaf logits;
PMG-AFT adds two KL terms on raw cosine similarities; FARE is the squared distance to the original
model's clean features.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from trainables.errors import must
from trainables.head import HeadLayout, HeadOutput
from trainables.numbers import is_finite_number

__all__ = ["FARELoss", "PMGAFTLoss", "PMGAFTSettings", "TeCoALoss"]


def _check_non_negative(name: str, value) -> None:
    if not (is_finite_number(value) and value >= 0):
        raise must(name, "a finite number >= 0", value)


def _leaf_logits(layout: HeadLayout, output: HeadOutput) -> torch.Tensor:
    return output.logits[:, layout.slice_of(layout.tree_names[0], 0)]


class TeCoALoss(nn.Module):
    """TeCoA (Mao et al., ICLR 2023): cross-entropy of the adversarial leaf logits.

    The logits already carry the head's logit scale (``100 * cos`` for CLIP's). Returns
    ``{"tecoa_loss"}``.
    """

    needs = frozenset({"adversarial"})

    def __init__(self, layout: HeadLayout):
        super().__init__()
        self.layout = layout

    def forward(self, adversarial: HeadOutput, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"tecoa_loss": F.cross_entropy(_leaf_logits(self.layout, adversarial), labels)}


@dataclass(frozen=True)
class PMGAFTSettings:
    """Weights of PMG-AFT's two KL terms.

    Attributes:
        reference_weight: weight of ``KL(original model on x_adv || model on x_adv)``, >= 0.
            Default 1.0 (the reference implementation).
        clean_weight: weight of ``KL(model on x || model on x_adv)``, >= 0. Default 1.0.
    """

    reference_weight: float = 1.0
    clean_weight: float = 1.0

    def __post_init__(self) -> None:
        _check_non_negative("pmg.reference_weight", self.reference_weight)
        _check_non_negative("pmg.clean_weight", self.clean_weight)


def _kl_sum(target_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """``sum_b KL(softmax(target_b) || softmax(logits_b))``, summed over the batch."""
    return F.kl_div(
        F.log_softmax(logits.float(), dim=-1),
        F.log_softmax(target_logits.float(), dim=-1),
        reduction="sum",
        log_target=True,
    )


class PMGAFTLoss(nn.Module):
    """PMG-AFT (Wang et al., CVPR 2024): CE + two KL terms towards the adversarial output.

    - ``ce_loss``: cross-entropy of the adversarial leaf logits (with the logit scale);
    - ``kl_reference_loss``: ``KL(softmax(s_ref_adv) || softmax(s_adv))``, summed over the batch;
    - ``kl_clean_loss``: ``KL(softmax(s_clean) || softmax(s_adv))``, summed over the batch;

    where ``s`` are raw cosine similarities (the leaf logits times the output's temperature,
    i.e. divided by the logit scale), as in the reference code. The clean output keeps its
    gradient; the reference output comes from the frozen original model.
    """

    needs = frozenset({"adversarial", "clean", "reference_adversarial"})

    def __init__(self, layout: HeadLayout, settings: PMGAFTSettings | None = None):
        super().__init__()
        self.layout = layout
        self.settings = settings if settings is not None else PMGAFTSettings()

    def _raw(self, output: HeadOutput) -> torch.Tensor:
        return _leaf_logits(self.layout, output) * output.temperature

    def forward(
        self,
        adversarial: HeadOutput,
        clean: HeadOutput,
        reference_adversarial: HeadOutput,
        labels: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        raw_adversarial = self._raw(adversarial)
        return {
            "ce_loss": F.cross_entropy(_leaf_logits(self.layout, adversarial), labels),
            "kl_reference_loss": self.settings.reference_weight
            * _kl_sum(self._raw(reference_adversarial), raw_adversarial),
            "kl_clean_loss": self.settings.clean_weight
            * _kl_sum(self._raw(clean), raw_adversarial),
        }


class FARELoss(nn.Module):
    """FARE (Schlarmann et al., ICML 2024): unsupervised feature alignment.

    ``fare_loss = mean_b |f(x_adv)_b - f_orig(x)_b|^2`` on unnormalised encoder features:
    squared L2 summed over the dimensions, averaged over the batch. No labels, no text.
    """

    needs = frozenset({"adversarial", "reference_clean"})

    def forward(
        self, adversarial_features: torch.Tensor, reference_clean_features: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        difference = adversarial_features.float() - reference_clean_features.float()
        return {"fare_loss": difference.square().sum(dim=-1).mean()}
