"""`raysearch data`: describe a dataset (`info`: an embedded one, or one on disk, checked), render
or load an embedded dataset's cache (`build`)."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from trainables.data.embedded import embedded_cache_path, is_cached, load_embedded
from trainables.data.embedded_spec import RECIPES, EmbeddedSpec, embedded_spec
from trainables.data.registry import available_datasets, describe_on_disk
from trainables.data.splits import SPLITS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "data",
        help="describe a dataset (or check one on disk), or build the embedded dataset's cache",
        description="The embedded datasets, rendered once per spec and cached as Parquet: "
        "`embedded` (twenty shapes under three class trees, the fine-tuning dataset), "
        "`embedded-world` (what the base CLIP is pretrained on) and the zero-shot suite "
        "(`embedded-heldout-shapes`, `-colour`, `-size`, `-background`); and the datasets "
        "read from files under --root (cifar10, cifar100, imagenet1k), never downloaded.",
    )
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION")
    actions.required = True

    info = actions.add_parser(
        "info",
        help="print the classes, trees, split sizes and cache path; or check a dataset on disk",
        description="Print the classes, the class trees (nodes per level), the split sizes and "
        "the cache folder of an embedded dataset (renders nothing); or check a dataset on disk "
        "under --root and print its classes and split sizes (exit 2, with one line naming what "
        "is missing, when it is not usable).",
    )
    _add_spec_arguments(info, available_datasets())
    info.add_argument(
        "--root",
        default=None,
        help="folder of a dataset read from files (default: the cache's datasets folder)",
    )
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(handler=run_info)

    build = actions.add_parser(
        "build",
        help="render the embedded dataset into the cache (or load it) and time it",
        description="Render the embedded dataset into the cache unless it is there already, "
        "read every split back, and print the cache folder and the time taken.",
    )
    _add_spec_arguments(build, tuple(RECIPES))
    build.add_argument(
        "--workers", type=int, default=None, help="render processes (default: automatic)"
    )
    build.add_argument("--json", action="store_true", help="print one JSON object")
    build.set_defaults(handler=run_build)


def _add_spec_arguments(parser: argparse.ArgumentParser, datasets: tuple[str, ...]) -> None:
    defaults = EmbeddedSpec()
    group = parser.add_argument_group("dataset spec (the embedded datasets)")
    group.add_argument("--dataset", choices=datasets, default="embedded", help="which dataset")
    group.add_argument("--seed", type=int, default=defaults.seed, help="render seed (default 0)")
    group.add_argument(
        "--image-size",
        type=int,
        default=defaults.image_size,
        help=f"image side in pixels, a multiple of 32 (default {defaults.image_size})",
    )
    for split in SPLITS:
        group.add_argument(
            f"--n-{split}",
            type=int,
            default=None,
            help=f"images in the {split} split (default: the dataset's own; embedded "
            f"{defaults.size(split)})",
        )
    group.add_argument(
        "--noise-max",
        type=float,
        default=defaults.noise_max,
        help=f"largest gaussian noise sigma on [0, 1] pixels (default {defaults.noise_max})",
    )


def spec_from_args(args: argparse.Namespace) -> EmbeddedSpec:
    """The :class:`EmbeddedSpec` described by the spec options (validated there)."""
    sizes = {f"n_{split}": getattr(args, f"n_{split}") for split in SPLITS}
    return embedded_spec(
        args.dataset,
        seed=args.seed,
        image_size=args.image_size,
        noise_max=args.noise_max,
        **{name: value for name, value in sizes.items() if value is not None},
    )


def dataset_info(spec: EmbeddedSpec) -> dict[str, Any]:
    """What `data info` shows, as plain data."""
    from trainables.hierarchy.shipped import load_shipped
    from trainables.hierarchy.tree import ClassTree, as_forest

    if spec.dataset == "embedded":
        forest = load_shipped("embedded")
    elif spec.dataset == "embedded-heldout-shapes":
        forest = as_forest(load_shipped("embedded-heldout-shapes"))
    else:
        forest = as_forest(ClassTree.flat(spec.recipe.label, spec.classes))
    trees = [
        {
            "name": tree.name,
            "depth": tree.depth,
            "nodes_per_level": [len(tree.level_names(level)) for level in range(tree.depth + 1)],
        }
        for tree in forest.trees
    ]
    return {
        "dataset": spec.dataset,
        "purpose": spec.recipe.purpose,
        "label": spec.recipe.label,
        "classes": list(spec.classes),
        "trees": trees,
        "image_size": spec.image_size,
        "splits": {split: spec.size(split) for split in SPLITS},
        "spec": spec.to_dict(),
        "cache_path": str(embedded_cache_path(spec)),
        "cached": is_cached(spec),
    }


def format_info(info: dict[str, Any]) -> str:
    size = info["image_size"]
    width = max(len(tree["name"]) for tree in info["trees"])
    lines = [
        f"{info['dataset']} ({info['purpose']}): {len(info['classes'])} classes of "
        f"{info['label']}, {size}x{size} RGB images",
        "classes: " + ", ".join(info["classes"]),
        "trees (nodes per level, leaves first):",
    ]
    for tree in info["trees"]:
        per_level = " / ".join(str(n) for n in tree["nodes_per_level"])
        lines.append(f"  {tree['name']:<{width}}  depth {tree['depth']}  {per_level}")
    lines.append("splits: " + ", ".join(f"{k} {n}" for k, n in info["splits"].items()))
    state = "built" if info["cached"] else "not built yet; `raysearch data build` renders it"
    lines.append(f"cache: {info['cache_path']} ({state})")
    return "\n".join(lines)


def run_info(args: argparse.Namespace) -> int:
    if args.dataset not in RECIPES:
        on_disk = describe_on_disk(args.dataset, args.root)
        print(json.dumps(on_disk, indent=2) if args.json else format_on_disk(on_disk))
        return 0
    info = dataset_info(spec_from_args(args))
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0


def format_on_disk(info: dict[str, Any]) -> str:
    sizes = ", ".join(f"{split} {count:,}" for split, count in info["splits"].items())
    return (
        f"{info['dataset']}: {info['classes']} classes, {sizes} images\n"
        f"  {info['format']} under {info['root']}"
    )


def run_build(args: argparse.Namespace) -> int:
    import pyarrow.parquet  # noqa: F401  imported before the clock starts: the timings below
    import torch  # noqa: F401  measure rendering and reading, not library start-up

    spec = spec_from_args(args)
    rendered = not is_cached(spec)
    started = time.perf_counter()
    dataset = load_embedded(spec, workers=args.workers)
    built_at = time.perf_counter()
    images = sum(len(dataset.split(split)) for split in SPLITS)  # reads and checks every file
    finished = time.perf_counter()
    summary = {
        "cache_path": str(dataset.cache_path),
        "rendered": rendered,
        "images": images,
        "build_seconds": round(built_at - started, 3),
        "read_seconds": round(finished - built_at, 3),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    how = (
        f"rendered {images} images in {summary['build_seconds']:.2f} s"
        if rendered
        else f"already cached ({images} images)"
    )
    print(f"{spec.dataset} dataset {how}; read back in {summary['read_seconds']:.2f} s")
    print(f"cache: {summary['cache_path']}")
    return 0
