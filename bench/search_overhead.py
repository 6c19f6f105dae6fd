"""Per-trial overhead of the search machinery, on a trivial job, measured side by side.

    python bench/search_overhead.py [--trials 3] [--train-size 256]

The same tiny fine-tuning job (TeCoA, one epoch, a small evaluation) three ways:

1. **direct**: in this process, ``trainables.training.fit`` then the final robustness profile
   (what the job computes, without Ray or MLflow);
2. **Train job**: :func:`raysearch.train.run_job` (Ray Train with one worker, a checkpoint, the
   MLflow run with its params, per-epoch metrics and artifacts);
3. **search trial**: :func:`raysearch.search.launch` of ``--trials`` trials of that job
   (Tune + Optuna + Train + MLflow parent and child runs, summary and plots), per trial.

``ray.init`` is timed once and not counted (a search starts Ray once for all its trials).
Prints seconds per run and the ratios to the direct run.
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--train-size", type=int, default=256)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)

    import ray

    from raysearch.config import load_config, validate_with_data
    from raysearch.runtime import DRIVER_RESOURCE
    from raysearch.search import launch
    from raysearch.train import run_job
    from search_spaces.loader import space_from_dict

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        overrides = job_overrides(args.train_size, folder)
        config = load_config(None, overrides)
        forest = validate_with_data(config)

        direct = direct_seconds(config, forest)

        started = time.perf_counter()
        ray.init(num_cpus=2, resources={DRIVER_RESOURCE: 8}, dashboard_host="127.0.0.1")
        init = time.perf_counter() - started

        started = time.perf_counter()
        run_job(load_config(None, [*overrides, "name=bench-job"]), forest, verbose=False)
        train_job = time.perf_counter() - started

        space = space_from_dict(
            {
                "name": "bench",
                "base": None,
                "overrides": overrides,
                "objective": {"metric": "robust_leaf", "mode": "max"},
                "budget": {"trials": args.trials, "concurrency": 1, "scheduler": "none"},
                "space": {"optim.lr": {"type": "float", "low": 4e-4, "high": 6e-4}},
            },
            SPACES,
        )
        started = time.perf_counter()
        result = launch(space, name="bench", out=lambda line: None)
        search = time.perf_counter() - started
        ray.shutdown()

    per_trial = search / args.trials
    finished = sum(row.status == "finished" for row in result.rows)
    print(
        f"trivial job: TeCoA, 1 epoch of {args.train_size} images, evaluation on 64 images "
        f"(ray.init {init:.1f} s, not counted); {finished}/{args.trials} trials finished"
    )
    print(f"  direct (in process)           {direct:6.1f} s")
    print(f"  Train job (Train + MLflow)    {train_job:6.1f} s   ratio {train_job / direct:5.2f}")
    print(f"  search trial (Tune + Optuna + Train + MLflow, {args.trials} trials: {search:.1f} s)")
    print(f"    per trial                   {per_trial:6.1f} s   ratio {per_trial / direct:5.2f}")
    print(f"  search overhead per trial     {per_trial - direct:6.1f} s")
    print(f"  of which Tune + search        {per_trial - train_job:6.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
