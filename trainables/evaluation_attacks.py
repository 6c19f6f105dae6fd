"""The evaluation attacks run by torchattacks' own code: AutoAttack's white-box pair (APGD-CE then
APGD-T, FARE's protocol) for final numbers, and Square (Andriushchenko et al.), the gradient-free
sanity check: a head that masks gradients stops PGD but not Square.

torchattacks is an optional dependency (``raysearch[eval]``), imported when an attack is built.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from trainables.attacks import NORMS, Attack, check_radius_and_steps
from trainables.errors import must

#: The attacks :class:`AutoAttack` knows, with the fewest classes each needs.
AUTOATTACK_MIN_CLASSES = {"apgd-ce": 2, "apgd-dlr": 3, "apgd-t": 4}
#: FARE's protocol: AutoAttack's white-box pair.
AUTOATTACK_DEFAULT = ("apgd-ce", "apgd-t")


def _torchattacks():
    try:
        import torchattacks
    except ImportError:
        raise must(
            "torchattacks",
            "installed for AutoAttack (pip install 'raysearch[eval]')",
            "<not installed>",
        ) from None
    return torchattacks


class AutoAttack(Attack):
    """APGD-CE then APGD-T (Croce & Hein's AutoAttack, FARE's protocol), run by torchattacks.

    Input range [0, 1]; L-inf (default) or L2 ball of radius ``eps``. The attacks are
    torchattacks' own ``APGD`` and ``APGDT``; this adapter only sequences them: each attack runs
    on the samples no earlier attack has fooled, and every sample keeps the first adversarial
    example that fools the model (the worst case). Samples nothing fools come back unchanged.

    Args:
        model: maps [0, 1] images to the logits of one level (e.g. ``LevelHead``).
        eps: radius in [0, 1] pixel units.
        norm: ``"linf"`` or ``"l2"``.
        n_classes: number of logits; default None reads it from the model's output.
        seed: seed of every attack's random start (torchattacks reseeds the global generator
            with it; the adapter restores the caller's generator state afterwards).
        attacks: names in order, from ``"apgd-ce"``, ``"apgd-dlr"``, ``"apgd-t"``. A head with
            too few classes for an attack's loss skips it (DLR needs 3 logits, targeted DLR 4):
            :meth:`attacks_for` says which run.
        steps: iterations of each attack; default 100 (FARE).
        n_target_classes: target classes of APGD-T; default 9 (AutoAttack's standard), at most
            ``n_classes - 1``.

    Needs torchattacks (the ``eval`` extra).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        eps: float,
        norm: str = "linf",
        n_classes: int | None = None,
        seed: int = 0,
        attacks: Sequence[str] = AUTOATTACK_DEFAULT,
        steps: int = 100,
        n_target_classes: int = 9,
    ):
        super().__init__(model)
        self._torchattacks = _torchattacks()
        check_radius_and_steps(eps, steps)
        if norm not in NORMS:
            raise must("norm", "'linf' or 'l2'", norm)
        if n_classes is not None and n_classes < 2:
            raise must("n_classes", ">= 2 or None", n_classes)
        attacks = tuple(attacks)
        unknown = [name for name in attacks if name not in AUTOATTACK_MIN_CLASSES]
        if not attacks or unknown:
            raise must("attacks", f"a selection of {list(AUTOATTACK_MIN_CLASSES)}", list(attacks))
        if n_target_classes < 1:
            raise must("n_target_classes", ">= 1", n_target_classes)
        self.eps, self.norm, self.n_classes = float(eps), norm, n_classes
        self.seed, self.attacks, self.steps = int(seed), attacks, int(steps)
        self.n_target_classes = int(n_target_classes)

    def attacks_for(self, n_classes: int) -> tuple[str, ...]:
        """The attacks that run against a head with ``n_classes`` logits."""
        return tuple(n for n in self.attacks if n_classes >= AUTOATTACK_MIN_CLASSES[n])

    def _build(self, name: str, n_classes: int):
        ta = self._torchattacks
        common = {
            "norm": "Linf" if self.norm == "linf" else "L2",
            "eps": self.eps,
            "steps": self.steps,
            "n_restarts": 1,
            "seed": self.seed,
        }
        if name == "apgd-t":
            attack = ta.APGDT(self.model, n_classes=n_classes, **common)
            # torchattacks targets all n_classes - 1 classes; AutoAttack's standard is 9.
            attack.n_target_classes = min(self.n_target_classes, n_classes - 1)
            return attack
        return ta.APGD(self.model, loss="ce" if name == "apgd-ce" else "dlr", **common)

    def perturb(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            logits = self.model(images)
        n_classes = logits.shape[1]
        if self.n_classes is not None and self.n_classes != n_classes:
            raise must("n_classes", f"the model's number of logits ({n_classes})", self.n_classes)
        labels = labels.to(logits.device)
        fooled = logits.argmax(1) != labels
        adversarial = images.clone()
        devices = []
        if images.device.type == "cuda":
            index = images.device.index
            devices = [torch.cuda.current_device() if index is None else index]
        # torchattacks seeds the global generators: keep the caller's random state.
        with torch.random.fork_rng(devices=devices):
            for name in self.attacks_for(n_classes):
                remaining = (~fooled).nonzero().squeeze(1)
                if remaining.numel() == 0:
                    break
                candidates = self._build(name, n_classes)(images[remaining], labels[remaining])
                candidates = candidates.to(images)
                with torch.no_grad():
                    hits = self.model(candidates).argmax(1) != labels[remaining]
                adversarial[remaining[hits]] = candidates[hits]
                fooled[remaining[hits]] = True
        return adversarial


class SquareAttack(Attack):
    """Square, the score-based gradient-free attack, run by torchattacks' own code.

    It only queries the logits, so it cannot be fooled by a head whose gradients vanish or lie
    (clipped norms, quantisation): when it beats PGD by a wide margin, PGD's number overstates
    robustness. Input range [0, 1]; L-inf ball of radius ``eps``; ``queries`` model evaluations
    per image at most. Samples already misclassified come back unchanged.

    Needs torchattacks (the ``eval`` extra).
    """

    def __init__(self, model: nn.Module, *, eps: float, queries: int = 1000, seed: int = 0):
        super().__init__(model)
        self._torchattacks = _torchattacks()
        check_radius_and_steps(eps)
        if queries < 1:
            raise must("queries", ">= 1", queries)
        self.eps, self.queries, self.seed = float(eps), int(queries), int(seed)

    def perturb(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        attack = self._torchattacks.Square(
            self.model, norm="Linf", eps=self.eps, n_queries=self.queries, seed=self.seed
        )
        devices = []
        if images.device.type == "cuda":
            index = images.device.index
            devices = [torch.cuda.current_device() if index is None else index]
        # torchattacks seeds the global generators: keep the caller's random state.
        with torch.random.fork_rng(devices=devices):
            return attack(images, labels.to(images.device)).to(images)
