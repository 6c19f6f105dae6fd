"""`raysearch demo`: the main job on the embedded default, end to end."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

DEMO_SPACE = Path(__file__).resolve().parents[2] / "search_spaces" / "demo.yaml"
STEPS = 4


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the main job on the embedded default (what `make demo` runs)",
        description="Build the embedded dataset and its class trees, pretrain or load the "
        "cached base CLIP and print its zero-shot report, then run the demo search "
        "(search_spaces/demo.yaml): Optuna samples trees, depths, margins, temperature and "
        "learning rate, Ray Train fine-tunes each trial, MLflow records every one.",
    )
    parser.add_argument(
        "--trials", type=int, default=None, help="trials of the search (default: demo.yaml's)"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="show Ray's own output and the workers' logs"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from raysearch.commands.launch import print_summary
    from raysearch.commands.pretrain import describe_base, level_sizes
    from raysearch.report import show_progress_logs
    from raysearch.search import launch
    from search_spaces.loader import load_space
    from trainables.data.embedded import load_embedded
    from trainables.hierarchy.shipped import load_shipped
    from trainables.pretrain import load_or_pretrain_base

    show_progress_logs()
    started = time.perf_counter()
    dataset = load_embedded()
    sizes = {name: len(dataset.split(name)) for name in ("train", "val", "test")}
    print(f"[1/{STEPS}] embedded dataset: {len(dataset.classes)} classes, splits {sizes}")
    print(f"      cache: {dataset.cache_path}")
    forest = load_shipped("embedded")
    trees = ", ".join(
        f"{tree.name} (depth {tree.depth}: {'/'.join(map(str, level_sizes(forest)[tree.name]))})"
        for tree in forest.trees
    )
    print(f"[2/{STEPS}] class trees: {trees}")
    step_started = time.perf_counter()
    base = load_or_pretrain_base()
    print(
        f"[3/{STEPS}] "
        + describe_base(base, time.perf_counter() - step_started, level_sizes(forest))
    )
    space = load_space(DEMO_SPACE)
    trials = space.budget.trials if args.trials is None else args.trials
    print(f"[4/{STEPS}] search {DEMO_SPACE.name}: {trials} trials")
    result = launch(space, space_file=DEMO_SPACE, trials=args.trials, verbose=args.verbose)
    print_summary(result, space)
    print(f"demo finished in {time.perf_counter() - started:.1f} s")
    return 0 if result.best else 1
