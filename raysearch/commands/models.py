"""Options shared by the commands that read MLflow (inspect, ui, promote, predict, evaluate)."""

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


def resolve_tracking_uri(given: str | None) -> str:
    """``--tracking-uri``, else what the experiment config's default resolves to."""
    from raysearch.config import MlflowSettings
    from trainables.errors import must

    if given is not None and not given.strip():
        raise must("--tracking-uri", "a tracking URI such as sqlite:///mlflow.db", given)
    # Artifact downloads draw progress bars on the console otherwise.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    return MlflowSettings(tracking_uri=given).resolved_tracking_uri()


def tracking_uri(args: argparse.Namespace) -> str:
    return resolve_tracking_uri(args.tracking_uri)
