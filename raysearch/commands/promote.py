"""`raysearch promote`: register a search's best (or chosen) trial in the MLflow Model Registry."""

from __future__ import annotations

import argparse
import json

from raysearch.commands.models import add_store_options, tracking_uri


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "promote",
        help="register a trial of a search as a new model version and move an alias to it",
        description="Pick the best finished trial of a search by a metric (optionally with a "
        "minimum clean accuracy), or one trial by --run, and register it as a new version of "
        "MODEL_NAME: an MLflow pyfunc model carrying the fine-tuned weights, the config, the "
        "class trees, the prompt templates and the evaluation report, with lineage tags. The "
        "alias moves to that version. Promoting the same run again reuses its version.",
    )
    parser.add_argument("--search", required=True, help="the search: its parent run id or name")
    choice = parser.add_mutually_exclusive_group(required=True)
    choice.add_argument("--metric", help="promote the best finished trial by this metric")
    choice.add_argument("--run", help="promote this trial run")
    parser.add_argument(
        "--mode", choices=("max", "min"), default="max", help="--metric is better when (max)"
    )
    parser.add_argument(
        "--min-clean", type=float, default=None, help="only trials with clean_leaf >= this"
    )
    parser.add_argument("--name", required=True, help="registered model name")
    parser.add_argument("--alias", default="champion", help="alias to move (default: champion)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    add_store_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from raysearch import inspection, stores
    from raysearch.registry import (
        check_alias,
        check_model_name,
        choose_trial,
        find_search_run,
        promote,
    )

    check_model_name(args.name)
    check_alias(args.alias)
    uri = tracking_uri(args)
    # Registering writes to the store, but never into one made up here (or into another file).
    client = stores.open_store(uri, read_only=False)
    experiment = inspection.get_experiment(client, args.experiment)
    search = find_search_run(client, experiment.experiment_id, args.search)
    chosen = choose_trial(
        client,
        search,
        metric=args.metric,
        mode=args.mode,
        min_clean=args.min_clean,
        run_id=args.run,
    )
    result = promote(
        client, chosen, name=args.name, alias=args.alias, search_run_id=search.info.run_id
    )
    metrics = {k: chosen.data.metrics.get(k) for k in ("clean_leaf", "robust_leaf", "transfer")}
    if args.json:
        print(json.dumps({**result.__dict__, "metrics": metrics}, indent=2))
        return 0
    state = "registered" if result.created else "already registered"
    shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if v is not None)
    print(
        f"{state}: {result.name} version {result.version} (alias {result.alias}) from trial "
        f"run {result.run_id} ({chosen.info.run_name}: {shown})"
    )
    print(f"use it: raysearch predict --model models:/{result.name}@{result.alias} IMAGE...")
    return 0
