"""Ray Train with one worker against the plain single-process loop, on the same job.

    python bench/train_overhead.py [--method tecoa] [--epochs 2] [--train-size 16000]

Both sides fine-tune the same method from the same base weights with the same settings; the Ray
side runs :func:`trainables.loop.train_loop_per_worker` in a one-worker ``TorchTrainer`` (with
its per-epoch checkpoint and a small per-epoch evaluation), the plain side
:func:`trainables.training.fit`. ``ray.init`` is timed separately and not counted: a search
starts Ray once for all its trials. Prints both wall times and their ratio.
"""

from __future__ import annotations

import argparse
import copy
import math
import tempfile
import time
from dataclasses import replace

import torch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="tecoa")
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--train-size", type=int, default=16000)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from trainables.data.embedded import load_embedded
    from trainables.evaluate import AttackSettings
    from trainables.hierarchy.shipped import load_shipped
    from trainables.loop import JobSpec, train_loop_per_worker
    from trainables.methods import build_method, method_settings
    from trainables.pretrain import load_or_pretrain_base
    from trainables.training import OptimSettings, fit

    forest = load_shipped("embedded")
    base = load_or_pretrain_base().loaded
    train = load_embedded().split("train").subset(args.train_size)
    settings = method_settings(args.method)
    optim = OptimSettings(epochs=args.epochs, batch_size=args.batch)

    started = time.perf_counter()
    loaded = replace(base, model=copy.deepcopy(base.model))
    method = build_method(
        settings, loaded, forest, calibration_images=train.subset(256).float_images()
    )
    plain = fit(method, train, optim)
    plain_seconds = time.perf_counter() - started

    started = time.perf_counter()
    ray.init(num_cpus=args.threads, dashboard_host="127.0.0.1")
    init_seconds = time.perf_counter() - started
    spec = JobSpec(
        method=settings,
        optim=optim,
        evaluation=AttackSettings(eps=4 / 255, steps=1),
        eval_samples=100,
        train_size=args.train_size,
        forest=forest,
        final_profile=False,
    )
    with tempfile.TemporaryDirectory() as storage:
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config={"spec": spec},
            scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": args.threads}),
            run_config=RunConfig(name="overhead", storage_path=storage),
        )
        started = time.perf_counter()
        result = trainer.fit()
        ray_seconds = time.perf_counter() - started
    ray.shutdown()
    print(
        f"{args.method}: {plain.steps} steps of batch {args.batch}, {args.threads} threads "
        f"(ray.init {init_seconds:.1f} s, not counted)"
    )
    print(f"  plain loop       {plain_seconds:7.1f} s")
    print(
        f"  Ray Train, 1 wkr {ray_seconds:7.1f} s  (final step {result.metrics['step']}, "
        f"last epoch {result.metrics['epoch_seconds']:.1f} s of training; plain "
        f"{plain_seconds / max(1, math.ceil(args.epochs)):.1f} s per epoch)"
    )
    print(f"  overhead ratio   {ray_seconds / plain_seconds:7.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
