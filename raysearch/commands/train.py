"""`raysearch train`: one fine-tuning job on Ray Train, tracked in MLflow."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from raysearch import exit_codes
from trainables.readers import is_file


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="fine-tune one method on Ray Train (local Ray, or a cluster with --address)",
        description="Run one fine-tuning job from an experiment config: Ray Train workers, a "
        "checkpoint every epoch, one MLflow run. Settings come from CONFIG (YAML) and then "
        "from key=value overrides such as optim.lr=1e-3 method.name=tecoa.",
    )
    # A string, not a Path: a first override such as mlflow.tracking_uri=sqlite:////x.db must
    # keep its slashes.
    parser.add_argument("config", nargs="?", help="experiment YAML (default: defaults)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="setting overrides")
    parser.add_argument("--workers", type=int, default=None, help="Ray Train workers")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: local)")
    parser.add_argument(
        "--resume", action="store_true", help="continue the interrupted job of this config"
    )
    parser.add_argument("--json", action="store_true", help="print the final result as JSON")
    parser.set_defaults(handler=run)


def _split_config_argument(args: argparse.Namespace) -> tuple[Path | None, list[str]]:
    from raysearch.config import looks_like_override

    # `raysearch train optim.lr=1e-3` has no YAML: the first positional is then an override.
    overrides = list(args.overrides)
    if args.config is None:
        return None, overrides
    if looks_like_override(args.config) and not is_file(args.config):
        return None, [args.config, *overrides]
    return Path(args.config), overrides


def run(args: argparse.Namespace) -> int:
    from raysearch.config import load_config, validate_with_data
    from raysearch.report import show_progress_logs
    from raysearch.train import TrainingFailed, run_job

    path, overrides = _split_config_argument(args)
    if args.workers is not None:
        overrides.append(f"scaling.workers={args.workers}")
    config = load_config(path, overrides)
    forest = validate_with_data(config)
    if not args.json:
        show_progress_logs()
    try:
        result = run_job(config, forest, resume=args.resume, address=args.address)
    except TrainingFailed as failure:
        print(f"raysearch: training failed: {failure}", file=sys.stderr)
        return exit_codes.FAILED
    summary = {
        "job": result.job,
        "mlflow_run_id": result.run_id,
        "tracking_uri": result.tracking_uri,
        "checkpoint": result.checkpoint,
        "metrics": {k: v for k, v in result.metrics.items() if "/" not in k},
        # Reported, never selected on: the same numbers on the test split.
        "test_metrics": {
            k.removeprefix("test/"): v
            for k, v in result.metrics.items()
            if k.startswith("test/") and k.count("/") == 1
        },
    }
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
        return 0
    metrics = summary["metrics"]
    print(f"job {result.job} finished: MLflow run {result.run_id} ({result.tracking_uri})")
    print(f"checkpoint: {result.checkpoint}")
    shown = ("loss", "clean_leaf", "robust_leaf", "transfer", "zeroshot_clean", "zeroshot_robust")
    epochs = f"epochs {int(metrics['epoch']) + 1}  " if "epoch" in metrics else ""
    print(
        "validation: "
        + epochs
        + "  ".join(f"{key} {metrics[key]:.4g}" for key in shown if key in metrics)
        + (
            f"  ({metrics['images_per_second']:.0f} img/s)"
            if "images_per_second" in metrics
            else ""
        )
    )
    test = summary["test_metrics"]
    if test:
        print("test: " + "  ".join(f"{key} {test[key]:.4g}" for key in shown if key in test))
    return 0
