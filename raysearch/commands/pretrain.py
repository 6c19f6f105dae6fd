"""`raysearch pretrain`: build or load the embedded base CLIP and print its zero-shot report."""

from __future__ import annotations

import argparse
import json
import time

from raysearch.report import format_zero_shot_report, show_progress_logs
from trainables.errors import must


def register(subparsers: argparse._SubParsersAction) -> None:
    from trainables.pretrain import PretrainSettings

    parser = subparsers.add_parser(
        "pretrain",
        help="build (once) or load the embedded base CLIP and print its zero-shot report",
        description="Pretrain the tiny base CLIP on the embedded dataset, or load it from the "
        "cache, and print its zero-shot accuracy per level, clean and under PGD.",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--seed", type=int, default=0, help="pretraining seed (default 0)")
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"optimiser steps (default {PretrainSettings.steps})",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch (default: torch's own choice); another thread count gives "
        "other weights, and the cache does not tell them apart",
    )
    parser.set_defaults(handler=run)


def level_sizes(forest) -> dict[str, list[int]]:
    return {
        tree.name: [len(tree.level_nodes(level)) for level in range(tree.depth + 1)]
        for tree in forest.trees
    }


def base_model_summary(base, seconds: float) -> dict:
    return {
        "weights": str(base.path),
        "built": base.built,
        "seconds": round(seconds, 1),
        "report": base.report,
    }


def run(args: argparse.Namespace) -> int:
    from trainables.hierarchy.shipped import load_shipped
    from trainables.pretrain import PretrainSettings, load_or_pretrain_base
    from trainables.training import check_seed

    check_seed(args.seed, "--seed")
    if args.threads is not None:
        if args.threads < 1:
            raise must("--threads", "an integer >= 1", args.threads)
        import torch

        torch.set_num_threads(args.threads)
    overrides = {"seed": args.seed}
    if args.steps is not None:
        overrides["steps"] = args.steps
    settings = PretrainSettings(**overrides)
    if not args.json:
        show_progress_logs()
    started = time.perf_counter()
    base = load_or_pretrain_base(settings)
    summary = base_model_summary(base, time.perf_counter() - started)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(describe_base(base, summary["seconds"], level_sizes(load_shipped("embedded"))))
    return 0


def describe_base(base, seconds: float, sizes: dict[str, list[int]]) -> str:
    report = base.report
    timing = report["pretraining"]
    how = (
        f"pretrained in {timing['seconds']} s ({timing['images_per_second']:.0f} img/s)"
        if base.built
        else f"loaded from the cache in {seconds:.1f} s (pretraining took {timing['seconds']} s)"
    )
    return "\n".join(
        [
            f"base CLIP `{report['model']}` on the embedded world: {how}",
            f"weights: {base.path}",
            format_zero_shot_report(report["val"], level_sizes=sizes),
            format_zero_shot_report(report["test"], level_sizes=sizes),
        ]
    )
