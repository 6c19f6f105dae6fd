"""`raysearch demo`: the main job on the embedded default, end to end."""

from __future__ import annotations

import argparse
import time


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the main job on the embedded default (what `make demo` runs)",
        description="Build the embedded dataset and its class trees, pretrain or load the "
        "cached base CLIP, and print its zero-shot report.",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from raysearch.commands.pretrain import describe_base, level_sizes
    from raysearch.report import show_progress_logs
    from trainables.data.embedded import load_embedded
    from trainables.hierarchy.shipped import load_shipped
    from trainables.pretrain import load_or_pretrain_base

    show_progress_logs()
    started = time.perf_counter()
    dataset = load_embedded()
    sizes = {name: len(dataset.split(name)) for name in ("train", "val", "test")}
    print(f"[1/3] embedded dataset: {len(dataset.classes)} classes, splits {sizes}")
    print(f"      cache: {dataset.cache_path}")
    forest = load_shipped("embedded")
    trees = ", ".join(
        f"{tree.name} (depth {tree.depth}: {'/'.join(map(str, level_sizes(forest)[tree.name]))})"
        for tree in forest.trees
    )
    print(f"[2/3] class trees: {trees}")
    step_started = time.perf_counter()
    base = load_or_pretrain_base()
    print("[3/3] " + describe_base(base, time.perf_counter() - step_started, level_sizes(forest)))
    print(f"demo finished in {time.perf_counter() - started:.1f} s")
    return 0
