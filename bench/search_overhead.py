"""Per-trial overhead of the search machinery, on a trivial job, measured side by side.

    python bench/search_overhead.py [--trials 4] [--train-size 256]

The same tiny fine-tuning job (TeCoA, one epoch, a small evaluation) three ways:

1. **direct**: in this process, the job's own loop (:func:`trainables.loop.run_in_process`:
   training, the per-epoch validation, the checkpoint, the final profile and the test and
   zero-shot evaluations), without Ray, Tune or MLflow: what the job computes. (The baseline
   before was ``trainables.training.fit`` and the robustness profile alone, which left the
   job's evaluations in the "fixed cost"; it is printed too.)
2. **Train job**: :func:`raysearch.train.run_job` (Ray Train with one worker, a checkpoint, the
   MLflow run with its params, per-epoch metrics and artifacts);
3. **search trial**: :func:`raysearch.search.launch` of ``--trials`` trials of that job
   (Tune + Optuna + MLflow parent and child runs, summary and plots), per trial.

Side by side, on a fresh local Ray each (``ray.init`` not counted: a search starts Ray once for
all its trials): a worker group with Ray Train's default 2 s poll (how every trial ran before),
a worker group with raysearch's shorter poll (multi-worker trials and ``raysearch train``
now), and one-worker trials in their own process (``scaling.in_process``, the default now).
Each path runs a search of one trial and one of ``--trials``: a trial beyond the first costs
``(T(n) - T(1)) / (n - 1)`` ("each more"); its **fixed cost** is that minus the direct run, and
what one trial adds on top is the search's own start and end (its MLflow parent run, Tune's
start, the first trial's process, the summary and plots). Prints seconds and ratios to the
direct run, per trial of the ``--trials`` search too (start and end included).
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"


def job_overrides(train_size: int, folder: Path) -> list[str]:
    return [
        "method.name=tecoa",
        f"data.train_size={train_size}",
        "data.eval_samples=64",
        "optim.batch_size=64",
        "optim.epochs=1",
        "optim.warmup_steps=2",
        "evaluation.steps=2",
        "attack.steps=1",
        f"checkpoint.storage_path={folder / 'ray_results'}",
        f"mlflow.tracking_uri=sqlite:///{folder / 'mlflow.db'}",
    ]


def direct_loop_seconds(config, forest) -> float:
    """The job's own loop in this process, without Ray, Tune or MLflow."""
    from raysearch.train import job_spec
    from trainables.loop import run_in_process
    from trainables.pretrain import load_or_pretrain_base

    load_or_pretrain_base()
    spec = job_spec(config, forest, tracking_uri=None, run_id=None)
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        run_in_process(spec, folder, keep=config.checkpoint.keep)
        return time.perf_counter() - started


def direct_seconds(config, forest) -> float:
    """The job's computation in this process: fine-tune, then evaluate as the job does."""
    from trainables.data.registry import load_split
    from trainables.evaluate import robustness_profile
    from trainables.methods import build_method
    from trainables.pretrain import load_or_pretrain_base
    from trainables.training import fit

    base = load_or_pretrain_base().loaded
    started = time.perf_counter()
    train = load_split("embedded", "train").subset(config.data.train_size)
    test = load_split("embedded", "test")
    loaded = replace(base, model=copy.deepcopy(base.model))
    method = build_method(
        config.method, loaded, forest, calibration_images=train.subset(256).float_images()
    )
    fit(method, train, config.optim)
    evaluator = method.classifier.with_forest(forest).eval()
    samples = config.data.eval_samples
    robustness_profile(evaluator, test.images[:samples], test.labels[:samples], config.evaluation)
    return time.perf_counter() - started


#: What each line measures: (label, Ray Train's poll interval or None for raysearch's,
#: in process). "before": what every trial ran as until one-worker trials ran in process.
PATHS = (
    ("worker group, Ray's 2 s poll (before)", "2.0", False),
    ("worker group, raysearch's poll (now)", None, False),
    ("in the trial's process (now)", None, True),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--train-size", type=int, default=256)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)

    import os

    import ray

    from raysearch.config import load_config, validate_with_data
    from raysearch.runtime import TRAIN_POLL_VARIABLE, start_local_ray
    from raysearch.search import launch
    from raysearch.spaces import space_from_dict
    from raysearch.train import run_job

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        overrides = job_overrides(args.train_size, folder)
        config = load_config(None, overrides)
        forest = validate_with_data(config)
        fit_only = direct_seconds(config, forest)
        direct = direct_loop_seconds(config, forest)

        for number, (label, poll, in_process) in enumerate(PATHS):
            # Ray Train reads its poll interval when Ray starts the trial processes.
            if poll is None:
                os.environ.pop(TRAIN_POLL_VARIABLE, None)
            else:
                os.environ[TRAIN_POLL_VARIABLE] = poll
            start_local_ray(2, 8, log_to_driver=False)
            job = None
            if not in_process:  # `raysearch train` always runs a worker group
                started = time.perf_counter()
                job_config = load_config(None, [*overrides, f"name=bench-job-{number}"])
                run_job(job_config, forest, verbose=False)
                job = time.perf_counter() - started
            extra = [] if in_process else ["scaling.in_process=false"]
            seconds = {}
            for trials in (1, args.trials):
                space = space_from_dict(
                    {
                        "name": "bench",
                        "base": None,
                        "overrides": [*overrides, *extra],
                        "objective": {"metric": "robust_leaf", "mode": "max"},
                        "budget": {"trials": trials, "concurrency": 1, "scheduler": "none"},
                        "space": {"optim.lr": {"type": "float", "low": 4e-4, "high": 6e-4}},
                    },
                    SPACES,
                )
                started = time.perf_counter()
                result = launch(space, name=f"bench-{number}-{trials}", out=lambda line: None)
                seconds[trials] = time.perf_counter() - started
                assert all(row.status == "finished" for row in result.rows), result.rows
            ray.shutdown()
            # Each trial beyond the first costs the same: the search's own start and end (its
            # MLflow parent run, Tune's start, the summary and plots) are what one trial adds.
            marginal = (seconds[args.trials] - seconds[1]) / (args.trials - 1)
            rows.append((label, job, seconds[args.trials] / args.trials, marginal, seconds[1]))

    print(
        f"trivial job: TeCoA, 1 epoch of {args.train_size} images, evaluation on 64 images; "
        f"searches of 1 and {args.trials} trials (ray.init not counted)"
    )
    print(
        f"  direct: the job's loop in process {direct:.1f} s (fit and profile alone, the "
        f"baseline before: {fit_only:.1f} s)"
    )
    print(
        f"  {'trial path':<40}{'Train job':>10}{'ratio':>7}{'per trial':>11}{'ratio':>7}"
        f"{'each more':>11}{'fixed cost':>12}{'search start+end':>18}"
    )
    for label, job, per_trial, marginal, one in rows:
        job_text = f"{job:8.1f} s{job / direct:7.2f}" if job is not None else f"{'-':>10}{'':>7}"
        print(
            f"  {label:<40}{job_text}{per_trial:9.1f} s{per_trial / direct:7.2f}"
            f"{marginal:9.1f} s{marginal - direct:10.1f} s{one - marginal:16.1f} s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
