"""Options shared by the commands that read MLflow (promote, predict, evaluate)."""

from __future__ import annotations

import argparse
import os


def add_store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here)",
    )
    parser.add_argument(
        "--experiment", default="raysearch", help="MLflow experiment (default: raysearch)"
    )


def tracking_uri(args: argparse.Namespace) -> str:
    from raysearch.config import MlflowSettings

    # Artifact downloads draw progress bars on the console otherwise.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    return MlflowSettings(tracking_uri=args.tracking_uri).resolved_tracking_uri()
