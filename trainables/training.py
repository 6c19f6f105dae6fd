"""One adversarial training step for any method, and a simple single-process loop around it.

:func:`training_step` is the unit every trainer shares: attack, then loss, then optimiser step.
The loop here (:func:`fit`) runs it over epochs in one process; the distributed loop runs the
same function on each worker with a DDP-wrapped model.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch

from trainables.errors import must

log = logging.getLogger(__name__)

OPTIMIZERS = ("adamw", "sgd")
PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class OptimSettings:
    """Optimiser and schedule of fine-tuning (METHOD.md: open; defaults from the peers).

    Attributes:
        epochs: passes over the training split (fractional allowed). Default 1.
        batch_size: global batch. Default 128.
        optimizer: ``"adamw"`` (FARE, the method) or ``"sgd"`` with momentum (TeCoA, PMG-AFT).
        lr: peak learning rate. Default 5e-4, for the tiny embedded model; ViT-B/32 uses 1e-5.
        weight_decay: decoupled weight decay on matrices and filters (not on biases, norms or
            head scales). Default 1e-4.
        momentum: SGD momentum. Default 0.9.
        warmup_steps: linear warm-up, then cosine decay to zero. Default 20.
        max_steps: stop after this many steps (a budget cap), whatever ``epochs`` says.
        precision: autocast dtype on the training device; geometry always runs in float32.
        seed: seeds the shuffling and the attacks' random starts.
    """

    epochs: float = 1.0
    batch_size: int = 128
    optimizer: str = "adamw"
    lr: float = 5e-4
    weight_decay: float = 1e-4
    momentum: float = 0.9
    warmup_steps: int = 20
    max_steps: int | None = None
    precision: str = "fp32"
    seed: int = 0

    def __post_init__(self):
        if not self.epochs > 0:
            raise must("optim.epochs", "> 0", self.epochs)
        if self.batch_size < 1:
            raise must("optim.batch_size", ">= 1", self.batch_size)
        if self.optimizer not in OPTIMIZERS:
            raise must("optim.optimizer", f"one of {list(OPTIMIZERS)}", self.optimizer)
        if not self.lr > 0:
            raise must("optim.lr", "> 0", self.lr)
        if self.weight_decay < 0:
            raise must("optim.weight_decay", ">= 0", self.weight_decay)
        if self.warmup_steps < 0:
            raise must("optim.warmup_steps", ">= 0", self.warmup_steps)
        if self.max_steps is not None and self.max_steps < 1:
            raise must("optim.max_steps", ">= 1 or null", self.max_steps)
        if self.precision not in PRECISIONS:
            raise must("optim.precision", f"one of {list(PRECISIONS)}", self.precision)
        check_seed(self.seed, "optim.seed")

    def total_steps(self, train_size: int) -> int:
        per_epoch = max(1, train_size // self.batch_size)
        steps = max(1, math.ceil(self.epochs * per_epoch))
        return min(steps, self.max_steps) if self.max_steps else steps


#: Seeds are below 2**32 (NumPy's bound): derived seeds such as ``seed * 1_000_003 + epoch`` then
#: stay within the 64 bits torch's generators take.
SEED_LIMIT = 2**32


def check_seed(seed: int, field: str) -> None:
    """Refuse a seed outside ``[0, SEED_LIMIT)`` with one line naming ``field``."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
        raise must(field, "an integer from 0 to 2**32 - 1 (4294967295)", seed)


def build_optimizer(parameters: list[torch.nn.Parameter], settings: OptimSettings):
    """AdamW or SGD with decay only on parameters of two or more dimensions."""
    decayed = [p for p in parameters if p.ndim >= 2]
    plain = [p for p in parameters if p.ndim < 2]
    groups = [
        {"params": decayed, "weight_decay": settings.weight_decay},
        {"params": plain, "weight_decay": 0.0},
    ]
    if settings.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=settings.lr, momentum=settings.momentum)
    return torch.optim.AdamW(groups, lr=settings.lr)


def warmup_cosine(step: int, total_steps: int, warmup_steps: int) -> float:
    """Learning-rate factor at ``step``: linear warm-up, then cosine decay to zero."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def autocast_for(device: torch.device | str, precision: str):
    """The autocast context of ``precision`` on ``device`` (a no-op for fp32)."""
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def training_step(
    method,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    epoch: float = 0.0,
    precision: str = "fp32",
    scaler: torch.amp.GradScaler | None = None,
) -> dict[str, float]:
    """Attack, then loss, then one optimiser step; returns every loss term as a float.

    Args:
        method: a :class:`trainables.methods.Method` (its attack runs on the unwrapped model).
        model: the trained classifier, or its DDP wrapper (the loss forward goes through it).
        images: float [0, 1] images ``[B, 3, H, W]`` on the model's device; labels ``[B]``.
        epoch: fractional epoch, for margin warm-up.
        scaler: a GradScaler for fp16 autocast.

    The total is the sum of every term whose name ends in ``_loss``; other keys are logged only.
    """
    device = images.device
    perturbation = method.perturb(images, labels)
    model.train()
    with autocast_for(device, precision):
        terms = method.loss_terms(model, images, perturbation, labels, epoch=epoch)
    total = sum(value for key, value in terms.items() if key.endswith("_loss"))
    if not torch.isfinite(total):
        raise FloatingPointError(f"the training loss is not finite: {_floats(terms)}")
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(total).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        total.backward()
        optimizer.step()
    return {"loss": float(total.detach()), **_floats(terms)}


def _floats(terms: dict) -> dict[str, float]:
    return {
        key: float(value.detach()) if torch.is_tensor(value) else float(value)
        for key, value in terms.items()
    }


def build_scheduler(optimizer: torch.optim.Optimizer, settings: OptimSettings, total_steps: int):
    """Linear warm-up over ``settings.warmup_steps``, then cosine decay to zero at the end."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, total_steps, settings.warmup_steps)
    )


def train_epoch(
    method,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    epoch: int,
    steps_per_epoch: int,
    max_steps: int,
    precision: str = "fp32",
    scaler: torch.amp.GradScaler | None = None,
) -> tuple[dict[str, float], int]:
    """Run :func:`training_step` over ``batches`` (uint8 or [0, 1] images, labels), at most
    ``max_steps`` times; return the mean of every logged term and the number of steps run.

    Shared by :func:`fit` and the distributed per-worker loop.
    """
    sums: dict[str, float] = {}
    count = 0
    for images, labels in batches:
        if count >= max_steps:
            break
        if images.dtype == torch.uint8:
            images = images.float().div_(255)
        terms = training_step(
            method,
            model,
            optimizer,
            images,
            labels,
            epoch=epoch + count / steps_per_epoch,
            precision=precision,
            scaler=scaler,
        )
        scheduler.step()
        method.after_step()
        for key, value in terms.items():
            sums[key] = sums.get(key, 0.0) + value
        count += 1
    return {key: value / max(count, 1) for key, value in sums.items()}, count


def shuffled_batches(
    size: int, batch_size: int, *, seed: int, epoch: int
) -> Iterator[torch.Tensor]:
    """Index batches of one epoch, reshuffled per epoch from ``seed``; the last partial batch
    is dropped so every step sees the same batch size."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(size, generator=generator)
    for start in range(0, size - batch_size + 1, batch_size):
        yield order[start : start + batch_size]


@dataclass
class FitResult:
    steps: int = 0
    seconds: float = 0.0
    images_per_second: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)  # one mean row per epoch


def fit(
    method,
    split,
    settings: OptimSettings,
    *,
    device: torch.device | str = "cpu",
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> FitResult:
    """Fine-tune ``method.classifier`` on ``split`` (an ImageSplit) in this process.

    Runs :func:`training_step` for ``settings.total_steps(len(split))`` steps under a warm-up
    + cosine schedule, and returns the per-epoch mean of every logged term.
    """
    result = FitResult()
    if not method.trains:
        return result
    model = method.classifier
    optimizer = build_optimizer(method.parameters(), settings)
    total_steps = settings.total_steps(len(split))
    per_epoch = max(1, len(split) // settings.batch_size)
    scheduler = build_scheduler(optimizer, settings, total_steps)
    scaler = torch.amp.GradScaler() if settings.precision == "fp16" else None
    started = time.perf_counter()
    epoch = 0
    while result.steps < total_steps:
        batches = (
            (split.images[index].to(device), split.labels[index].to(device))
            for index in shuffled_batches(
                len(split), settings.batch_size, seed=settings.seed, epoch=epoch
            )
        )
        row, count = train_epoch(
            method,
            model,
            optimizer,
            scheduler,
            batches,
            epoch=epoch,
            steps_per_epoch=per_epoch,
            max_steps=total_steps - result.steps,
            precision=settings.precision,
            scaler=scaler,
        )
        result.steps += count
        result.history.append(row)
        log.info("epoch %d: %s", epoch, row)
        if on_epoch is not None:
            on_epoch(epoch, row)
        epoch += 1
    result.seconds = time.perf_counter() - started
    result.images_per_second = result.steps * settings.batch_size / max(result.seconds, 1e-9)
    model.eval()
    return result
