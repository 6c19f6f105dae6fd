"""The job's loop on Ray Train and in process against the plain single-process loop.

    python bench/train_overhead.py [--method tecoa] [--epochs 2] [--train-size 16000]

Every side fine-tunes the same method from the same base weights with the same settings. The
plain side is :func:`trainables.training.fit`; the others run the job's loop with its per-epoch
checkpoint and a small per-epoch evaluation: :func:`trainables.loop.train_loop_per_worker` in a
one-worker ``TorchTrainer`` with Ray Train's default 2 s controller poll (how every job ran
before) and with raysearch's (``raysearch.runtime.TRAIN_POLL_SECONDS``: ``raysearch train``
and multi-worker trials now), and :func:`trainables.loop.run_in_process` (one-worker search
trials now). ``ray.init`` is timed separately and not counted: a search starts Ray once for all
its trials. Prints the wall times and their ratios to the plain loop.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
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
    parser.add_argument(
        "--polls",
        default=None,
        help="Ray Train controller poll intervals to compare, in seconds, comma-separated "
        "(default: Ray's 2.0 and raysearch's)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from raysearch.runtime import TRAIN_POLL_SECONDS, TRAIN_POLL_VARIABLE, start_local_ray
    from trainables.data.embedded import load_embedded
    from trainables.evaluate import AttackSettings
    from trainables.hierarchy.shipped import load_shipped
    from trainables.loop import JobSpec, run_in_process, train_loop_per_worker
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
    start_local_ray(args.threads, 1, log_to_driver=False)
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
    timings = []
    # Ray Train hands this process's value to the controller it starts for each fit().
    names = {"2.0": "Ray's default poll (before)", TRAIN_POLL_SECONDS: "raysearch's poll"}
    polls = args.polls.split(",") if args.polls else list(names)
    for poll in polls:
        label = names.get(poll, "poll")
        os.environ[TRAIN_POLL_VARIABLE] = poll
        with tempfile.TemporaryDirectory() as storage:
            trainer = TorchTrainer(
                train_loop_per_worker,
                train_loop_config={"spec": spec},
                scaling_config=ScalingConfig(
                    num_workers=1, resources_per_worker={"CPU": args.threads}
                ),
                run_config=RunConfig(name="overhead", storage_path=storage),
            )
            started = time.perf_counter()
            result = trainer.fit()
            timings.append(
                (f"Ray Train, 1 worker, {label} {poll} s", time.perf_counter() - started)
            )
    ray.shutdown()
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        run_in_process(spec, folder)
        timings.append(("in process (a one-worker search trial)", time.perf_counter() - started))

    print(
        f"{args.method}: {plain.steps} steps of batch {args.batch}, {args.threads} threads "
        f"(ray.init {init_seconds:.1f} s, not counted; last Ray epoch "
        f"{result.metrics['epoch_seconds']:.1f} s of training, plain "
        f"{plain_seconds / max(1, math.ceil(args.epochs)):.1f} s per epoch)"
    )
    print(f"  {'plain loop':<52}{plain_seconds:7.1f} s")
    for label, seconds in timings:
        print(f"  {label:<52}{seconds:7.1f} s   ratio {seconds / plain_seconds:6.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
