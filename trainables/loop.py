"""The Ray Train per-worker loop: one fine-tuning job on any number of workers.

Each worker builds its own data and model from a :class:`JobSpec` (plain, picklable settings),
wraps the classifier with ``prepare_model`` (DDP: gloo on CPU, nccl on GPU), runs the shared
:func:`trainables.training.training_step` on its shard of every global batch, evaluates on rank
0 at the end of every epoch (validation split; the test split once, after the last epoch, under
``test/`` names), and reports metrics with a checkpoint holding everything needed to
continue exactly where it stopped: model, optimiser, scheduler, epoch, RNG states.

The same loop also runs a job's one worker in the calling process, without Ray Train
(:func:`run_in_process`: a search trial, which saves the controller and worker-group start-up):
it then keeps its checkpoints in the job's folder itself (:mod:`trainables.checkpoints`) and
hands every report to a callback (a trial forwards them to Ray Tune). The two kinds of worker
are :mod:`trainables.workers`.

Training data comes from :func:`trainables.data.registry.training_set`: a split held in memory,
or images decoded by the DataLoader's own processes (``JobSpec.loader_workers``), each worker
reading its shard of every epoch's shuffle.

Rank 0 also hands the epoch's metrics to ``JobSpec.log_epoch`` (the driver passes
:class:`raysearch.tracking.EpochLog`, which writes them to the job's MLflow run once per epoch
and stops an attempt that a later one superseded); the loop itself knows nothing of MLflow.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch

from trainables.checkpoints import PROFILE_FILE, STATE_FILE
from trainables.data.image_files import InMemoryImages
from trainables.evaluate import (
    AttackSettings,
    attacked_accuracy,
    level_accuracy,
    robustness_profile,
)
from trainables.hierarchy.tree import Forest
from trainables.methods import MethodSettings, build_method
from trainables.training import OptimSettings, build_optimizer, build_scheduler, train_epoch
from trainables.workers import InProcessWorker, RayTrainWorker

log = logging.getLogger(__name__)


class EpochLogger(Protocol):
    """Where rank 0 sends each epoch's metrics."""

    def begin(self) -> None:
        """Called once per start of the loop, before the newest checkpoint is read. It may
        claim the job's log, so that an earlier start still running elsewhere stops."""

    def __call__(self, epoch: int, metrics: dict[str, float]) -> None:
        """Called after each epoch, before its checkpoint is kept; raising stops the job with
        that epoch neither logged nor checkpointed."""


@dataclass(frozen=True)
class JobSpec:
    """Everything a worker needs to run one fine-tuning job (the driver builds it).

    Attributes:
        method, optim: the method and its optimiser/schedule.
        evaluation: the PGD of the per-epoch robust accuracy and of the final profile.
        eval_samples: test images evaluated (rank 0).
        dataset, data_root, train_size: the data (``trainables.data.registry.load_split``).
        forest: the dataset's class trees (every tree is evaluated; the method picks its own).
        model_name, pretrained: the base model (``trainables.clip_loader.load_clip``);
            ``grad_checkpointing`` recomputes its image tower's activations in the backward.
        seed: seeds shuffling, attacks and initialisation.
        log_epoch: an :class:`EpochLogger` for rank 0 (picklable: it travels to the workers;
            None: no log).
        final_profile: evaluate the full per-level robustness profile after the last epoch.
        zeroshot_suite: the zero-shot suite evaluated after the last epoch (None: none);
            ``zeroshot_samples`` caps each of its datasets; ``zeroshot_every_epoch`` evaluates it
            after every epoch instead.
        loader_workers: DataLoader processes decoding the training images (None: none for a
            split in memory at the model's size, else up to 4).

    Every per-epoch metric reads the validation split (what searches, schedulers and promotion
    select on). After the last epoch the same leaf and zero-shot numbers are also measured on
    the test split and reported under ``test/...`` names: reported, never selected on.
    """

    method: MethodSettings
    optim: OptimSettings
    evaluation: AttackSettings = field(default_factory=AttackSettings)
    eval_samples: int = 1000
    dataset: str = "embedded"
    data_root: str | None = None
    train_size: int | None = None
    forest: Forest | None = None  # None: the embedded forest
    model_name: str = "embedded"
    pretrained: str | None = None
    grad_checkpointing: bool = False
    seed: int = 0
    log_epoch: EpochLogger | None = None
    final_profile: bool = True
    zeroshot_suite: str | None = None
    zeroshot_samples: int = 200
    zeroshot_every_epoch: bool = False
    loader_workers: int | None = None

    def epochs(self, train_size: int) -> int:
        """Whole epochs the job runs (the step budget rounded up to whole epochs)."""
        per_epoch = max(1, train_size // self.optim.batch_size)
        return max(1, -(-self.optim.total_steps(train_size) // per_epoch))


def _rng_state(generator: torch.Generator) -> dict:
    # Training draws only from torch's generators (shuffles are seeded per epoch).
    return {"torch": torch.get_rng_state(), "attack": generator.get_state()}


def _restore_rng(state: dict, generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["attack"])


def _epoch_metrics(classifier, images, labels, spec: JobSpec) -> dict[str, float]:
    """Clean accuracy at every level and robust leaf accuracy on the given images."""
    metrics: dict[str, float] = {}
    clean = level_accuracy(classifier, images, labels)
    for tree, levels in clean.items():
        for level, accuracy in levels.items():
            metrics[f"clean/{tree}/{level}"] = accuracy
    first = classifier.layout.tree_names[0]
    metrics["clean_leaf"] = clean[first][0]
    robust = attacked_accuracy(classifier, images, labels, spec.evaluation, tree=first, level=0)
    metrics["robust_leaf"] = robust[first][0]
    return metrics


def _zeroshot_metrics(classifier, spec: JobSpec, split: str, folder: str) -> dict[str, float]:
    """The zero-shot suite's per-dataset and average accuracy; the report goes to ``folder``."""
    from trainables.suites import evaluate_suite, get_suite, summary_metrics

    suite = get_suite(spec.zeroshot_suite)
    report = evaluate_suite(
        classifier,
        suite,
        split=split,
        samples=spec.zeroshot_samples,
        eps=(suite.headline_eps,),
        steps=spec.evaluation.steps,
        profile=False,
        seed=spec.seed,
        data_root=spec.data_root,
        fine_tuned_on=spec.dataset,
    )
    Path(folder, f"zeroshot-{split}.json").write_text(json.dumps(report, indent=2))
    return summary_metrics(report)


def _test_metrics(classifier, spec: JobSpec, folder: str) -> dict[str, float]:
    """The reported numbers: leaf accuracy and the zero-shot suite on the test split."""
    from trainables.data.registry import load_split

    test = load_split(
        spec.dataset,
        "test",
        root=spec.data_root,
        image_size=classifier.image_size,
        samples=spec.eval_samples,
    )
    metrics = _epoch_metrics(classifier, test.images, test.labels, spec)
    if spec.zeroshot_suite:
        metrics.update(_zeroshot_metrics(classifier, spec, "test", folder))
    return {f"test/{key}": value for key, value in metrics.items()}


def worst_superclass_accuracy(profile: dict) -> float:
    """The lowest accuracy of any superclass level under its own attack (nan without one)."""
    attacks = profile["superclass_attacks"].values()
    cells = [cell["level"] for levels in attacks for cell in levels.values()]
    return min(cells) if cells else float("nan")


def train_loop_per_worker(config: dict) -> None:
    """Ray Train entry point; ``config["spec"]`` is a :class:`JobSpec`."""
    # A worker process serves this job only: keep its console to warnings and this project's
    # progress (Ray Train logs every report and open_clip its config lookups at INFO).
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    logging.getLogger("trainables").setLevel(logging.INFO)
    run_loop(config["spec"], RayTrainWorker())


def run_in_process(
    spec: JobSpec, checkpoint_folder: str, *, keep: int = 2, after_report=None
) -> InProcessWorker:
    """Run (or resume, from the newest checkpoint in ``checkpoint_folder``) the job of ``spec``
    with its one worker in this process; see :class:`InProcessWorker`."""
    worker = InProcessWorker(checkpoint_folder, keep, after_report)
    run_loop(spec, worker)
    return worker


def run_loop(spec: JobSpec, worker: RayTrainWorker | InProcessWorker) -> None:
    """The fine-tuning job of ``spec`` on one worker of ``worker.world``."""
    from trainables.clip_loader import load_clip, use_grad_checkpointing
    from trainables.data.registry import load_split, training_set
    from trainables.hierarchy.shipped import load_shipped

    rank, device = worker.rank, worker.device
    torch.manual_seed(spec.seed)

    forest = spec.forest if spec.forest is not None else load_shipped("embedded")
    if rank == 0 and spec.zeroshot_suite is not None:  # rank 0 evaluates it
        from trainables.suites import check_on_disk, get_suite

        check_on_disk(get_suite(spec.zeroshot_suite), spec.data_root)
    loaded = load_clip(spec.model_name, spec.pretrained)
    if spec.grad_checkpointing:
        use_grad_checkpointing(loaded.model, spec.model_name)
    size = loaded.image_size
    train = training_set(spec.dataset, root=spec.data_root, image_size=size, seed=spec.seed)
    if spec.train_size is not None:
        train = torch.utils.data.Subset(train, range(min(spec.train_size, len(train))))
    calibration = load_split(
        spec.dataset, "train", root=spec.data_root, image_size=size, samples=min(256, len(train))
    )
    method = build_method(
        spec.method,
        loaded,
        forest,
        calibration_images=calibration.float_images(),
        seed=spec.seed * 1000 + rank,  # each rank attacks its own shard with its own starts
    )
    parameters = method.parameters()
    model = worker.prepare_model(method.classifier)
    method.to(device)

    sampler, loader, per_worker = _shard_loader(train, spec, worker)

    optimizer = build_optimizer(parameters, spec.optim)
    total_steps = spec.optim.total_steps(len(train))
    steps_per_epoch = max(1, len(sampler) // per_worker)
    scheduler = build_scheduler(optimizer, spec.optim, total_steps)
    scaler = torch.amp.GradScaler() if spec.optim.precision == "fp16" else None

    log_epoch = spec.log_epoch if rank == 0 else None
    if log_epoch is not None:
        # Before the newest checkpoint is read: an earlier attempt still running elsewhere
        # stops at its next epoch instead of logging it or saving a checkpoint.
        log_epoch.begin()
    start_epoch, step = 0, 0
    state = worker.saved_state()
    if state is not None:
        start_epoch, step = _restore(state, method, optimizer, scheduler)
        log.info("rank %d resumes after epoch %d (step %d)", rank, start_epoch - 1, step)

    validation = load_split(
        spec.dataset, "val", root=spec.data_root, image_size=size, samples=spec.eval_samples
    )
    evaluator = method.classifier.with_forest(forest)
    epochs = spec.epochs(len(train))

    for epoch in range(start_epoch, epochs):
        sampler.set_epoch(epoch)
        _set_epoch(train, epoch)
        started = time.perf_counter()
        metrics, count = train_epoch(
            method,
            model,
            optimizer,
            scheduler,
            loader,
            epoch=epoch,
            steps_per_epoch=steps_per_epoch,
            max_steps=total_steps - step,
            precision=spec.optim.precision,
            scaler=scaler,
        )
        step += count
        seconds = time.perf_counter() - started
        metrics.update(
            epoch=epoch,
            # Counts (not indices) for schedulers: ASHA's rungs and "has this job finished".
            epochs_completed=epoch + 1,
            epochs_total=epochs,
            step=step,
            start_epoch=start_epoch,  # > 0 when this worker group resumed from a checkpoint
            lr=scheduler.get_last_lr()[0],
            epoch_seconds=seconds,
            images_per_second=count * spec.optim.batch_size / max(seconds, 1e-9),
        )
        last = epoch == epochs - 1
        with tempfile.TemporaryDirectory() as folder:
            saved = None
            if rank == 0:
                metrics.update(_evaluate(evaluator, validation, spec, folder, last=last))
                torch.save(
                    _training_state(method, optimizer, scheduler, epoch, step),
                    Path(folder, STATE_FILE),
                )
                saved = folder
                if log_epoch is not None:
                    log_epoch(epoch, metrics)
                _log_progress(epoch, epochs, metrics)
            worker.report(metrics, epoch, saved)


def _shard_loader(train, spec: JobSpec, worker: RayTrainWorker | InProcessWorker):
    """``(sampler, loader, batch per worker)``: this worker's shard of ``train``, reshuffled
    each epoch, the global batch split over the workers."""
    world = worker.world
    if spec.optim.batch_size % world:
        log.warning("global batch %d is not divisible by %d workers", spec.optim.batch_size, world)
    per_worker = max(1, spec.optim.batch_size // world)
    sampler = torch.utils.data.distributed.DistributedSampler(
        train, num_replicas=world, rank=worker.rank, shuffle=True, seed=spec.seed, drop_last=True
    )
    processes = spec.loader_workers
    if processes is None:
        processes = 0 if isinstance(_base(train), InMemoryImages) else _default_loader_workers()
    loader = torch.utils.data.DataLoader(
        train,
        batch_size=per_worker,
        sampler=sampler,
        drop_last=True,
        num_workers=processes,
        # Fresh processes every epoch: each gets the dataset with that epoch's augmentation seed.
        persistent_workers=False,
        pin_memory=torch.cuda.is_available(),
    )
    return sampler, worker.prepare_loader(loader), per_worker


def _base(dataset):
    """The dataset under a ``Subset`` (a train-size cap)."""
    while isinstance(dataset, torch.utils.data.Subset):
        dataset = dataset.dataset
    return dataset


def _set_epoch(dataset, epoch: int) -> None:
    base = _base(dataset)
    if hasattr(base, "set_epoch"):
        base.set_epoch(epoch)


def _default_loader_workers() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(0, min(4, cpus - 1))


def _training_state(method, optimizer, scheduler, epoch: int, step: int) -> dict:
    """What a checkpoint holds to resume after ``epoch`` exactly (the attack's RNG included)."""
    return {
        "model": method.classifier.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": _rng_state(method.generator),
        "epoch": epoch,
        "step": step,
    }


def _restore(state: dict, method, optimizer, scheduler) -> tuple[int, int]:
    """Load a :func:`_training_state`; returns ``(first epoch to run, steps done)``."""
    method.classifier.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    _restore_rng(state["rng"], method.generator)
    return state["epoch"] + 1, state["step"]


def _evaluate(evaluator, validation, spec: JobSpec, folder: str, *, last: bool) -> dict:
    """Rank 0's metrics of an epoch on validation; after the last one also the robustness
    profile, the zero-shot suite and the test split, their reports written into ``folder``."""
    evaluator.eval()
    images, labels = validation.images, validation.labels
    metrics = _epoch_metrics(evaluator, images, labels, spec)
    if last and spec.final_profile:
        profile = robustness_profile(evaluator, images, labels, spec.evaluation)
        Path(folder, PROFILE_FILE).write_text(json.dumps(profile, indent=2))
        metrics["transfer"] = profile["transfer"]
        metrics["worst_superclass"] = worst_superclass_accuracy(profile)
    if spec.zeroshot_suite and (last or spec.zeroshot_every_epoch):
        metrics.update(_zeroshot_metrics(evaluator, spec, "val", folder))
    if last:
        metrics.update(_test_metrics(evaluator, spec, folder))
    return metrics


def _log_progress(epoch: int, epochs: int, metrics: dict) -> None:
    log.info(
        "epoch %d/%d: loss %.4f, clean leaf %.3f, robust leaf %.3f, %.0f img/s",
        epoch + 1,
        epochs,
        metrics.get("loss", float("nan")),
        metrics["clean_leaf"],
        metrics["robust_leaf"],
        metrics["images_per_second"],
    )
