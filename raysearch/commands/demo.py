"""`raysearch demo`: the main job on the embedded default, end to end."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

DEMO_SPACE = Path(__file__).resolve().parents[2] / "search_spaces" / "demo.yaml"
STEPS = 6
DEMO_MODEL = "raysearch-demo"


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
    from raysearch.spaces import load_space
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
    if not result.best:
        print("no trial finished: nothing to promote")
        return 1
    _promote_and_predict(result, space)
    print(f"demo finished in {time.perf_counter() - started:.1f} s")
    return 0


def _promote_and_predict(result, space) -> None:
    """Register the best trial (the front's best first objective, validation) and use it once."""
    import os

    from raysearch import tracking
    from raysearch.model_package import fetch_package, load_classifier
    from raysearch.registry import promote
    from raysearch.serving import predict_levels
    from trainables.data.embedded import load_embedded

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    client = tracking.client(result.tracking_uri)
    best = result.best[0]
    promotion = promote(
        client, client.get_run(best.run_id), name=DEMO_MODEL, search_run_id=result.parent_run_id
    )
    state = "registered" if promotion.created else "already registered"
    print(
        f"[5/{STEPS}] {state} trial {best.number} as {DEMO_MODEL} version {promotion.version}, "
        f"alias {promotion.alias}"
    )
    test = load_embedded().split("test")
    image_path = Path(result.artifacts["csv"]).parent / "example.png"
    _save_png(test.images[0], image_path)
    model_uri = f"models:/{DEMO_MODEL}@{promotion.alias}"
    with tempfile.TemporaryDirectory() as scratch:
        classifier = load_classifier(fetch_package(model_uri, result.tracking_uri, Path(scratch)))
    (entry,) = predict_levels(classifier, test.images[:1].float() / 255.0)
    truth = classifier.forest.leaves[int(test.labels[0])]
    print(f"[6/{STEPS}] {model_uri} on {image_path.name} (a test image of a {truth}):")
    print(f"      leaf: {entry['leaf'][0]} ({entry['leaf'][1]:.3f})")
    for tree, levels in entry["levels"].items():
        chain = " > ".join(f"{name} ({p:.2f})" for level, name, p in sorted(levels, reverse=True))
        print(f"      {tree}: {chain}")
    uri = result.tracking_uri
    print("next:")
    print(f"  raysearch predict --model {model_uri} {image_path}")
    print(f"  raysearch evaluate --model {model_uri} --samples 500")
    print(f"  raysearch evaluate --model {model_uri} --suite embedded-zeroshot")
    print(f"  raysearch inspect --search {result.name}")
    print(f"  raysearch ui          # MLflow UI on http://127.0.0.1:5000 ({uri})")


def _save_png(image, path: Path) -> None:
    from PIL import Image

    pixels = image.permute(1, 2, 0).contiguous().numpy()
    Image.fromarray(pixels).save(path)
