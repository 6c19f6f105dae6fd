"""`raysearch evaluate`: the robustness evaluation of any fine-tuned model."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from raysearch.commands.compare import parse_eps
from raysearch.commands.models import add_store_options, tracking_uri

ATTACKS = ("pgd", "autoattack")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="clean and robust accuracy at every level of a model (registered, run or folder)",
        description="Evaluate a model (models:/NAME@ALIAS, a training run id or a model folder) "
        "on the test split: clean accuracy at every level of every tree, and under attack: "
        "with pgd the per-level robustness profile (leaf attack, each superclass level under "
        "its own attack, transfer to the leaves); with autoattack (APGD-CE + APGD-T) the leaf "
        "accuracy.",
    )
    parser.add_argument("--model", required=True, help="models:/NAME@ALIAS, a run id or a folder")
    parser.add_argument(
        "--data", default=None, help="dataset (default: the one the model was trained on)"
    )
    parser.add_argument("--data-root", default=None, help="folder of torchvision datasets")
    parser.add_argument("--samples", type=int, default=1000, help="test images (default 1000)")
    parser.add_argument("--attack", choices=ATTACKS, default="pgd", help="pgd or autoattack")
    parser.add_argument("--eps", type=parse_eps, default=4 / 255, help="radius (default 4/255)")
    parser.add_argument(
        "--steps", type=int, default=None, help="attack steps (default: pgd 10, autoattack 100)"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    add_store_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from raysearch.config import config_from_dict
    from raysearch.model_package import CONFIG_FILE, fetch_package, load_classifier
    from trainables.data.class_lists import dataset_classes
    from trainables.data.registry import load_split
    from trainables.errors import must
    from trainables.evaluate import AttackSettings, autoattack_accuracy, robustness_profile

    if args.samples < 1:
        raise must("--samples", ">= 1", args.samples)
    if args.steps is not None and args.steps < 1:
        raise must("--steps", ">= 1", args.steps)
    uri = tracking_uri(args)
    with tempfile.TemporaryDirectory() as scratch:
        package = fetch_package(args.model, uri, Path(scratch))
        config = config_from_dict(json.loads((package / CONFIG_FILE).read_text()))
        classifier = load_classifier(package)
    dataset = args.data or config.data.dataset
    leaves = tuple(classifier.forest.leaves)
    if dataset_classes(dataset) != leaves:
        raise must("--data", f"a dataset with the model's {len(leaves)} classes", dataset)
    test = load_split(dataset, "test", root=args.data_root or config.data.root)
    images, labels = test.images[: args.samples], test.labels[: args.samples]
    if args.attack == "pgd":
        attack = AttackSettings(eps=args.eps, steps=args.steps or 10)
        report = robustness_profile(classifier, images, labels, attack)
    else:
        report = autoattack_accuracy(
            classifier, images, labels, eps=args.eps, steps=args.steps or 100
        )
    report = {"model": args.model, "dataset": dataset, **report}
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print(format_report(report))
    return 0


def format_report(report: dict) -> str:
    """Plain-text lines of a robustness profile or an AutoAttack result."""
    from raysearch.report import format_attack

    lines = [f"{report['model']} on {report['dataset']}"]
    if "clean" in report:
        lines.append(f"  {'tree':<12} {'level':>5} {'clean':>7} {'attacked':>9}")
        attacks = report.get("superclass_attacks", {})
        for tree, levels in report["clean"].items():
            for level, accuracy in sorted(levels.items(), key=lambda item: int(item[0])):
                if int(level) == 0:
                    attacked = report["leaf_attack"][tree][level]
                else:
                    attacked = attacks.get(tree, {}).get(level, {}).get("level")
                cell = f"{attacked:>9.3f}" if attacked is not None else f"{'':>9}"
                lines.append(f"  {tree:<12} {int(level):>5} {accuracy:>7.3f} {cell}")
        lines.append(f"attack: {format_attack(report['settings']['attack'])}")
        lines.append(
            f"robust leaf {report['robust_leaf']:.3f}, transfer (leaf accuracy under "
            f"superclass attacks) {report['transfer']:.3f}, {report['settings']['samples']} images"
        )
    else:
        from raysearch.report import format_eps

        settings = report["settings"]
        lines.append(
            f"AutoAttack ({', '.join(settings['attacks'])}, {settings['steps']} steps, L-inf "
            f"eps={format_eps(settings['eps'])}): {settings['tree']} level {settings['level']} "
            f"accuracy {report['accuracy']:.3f} on {settings['samples']} images"
        )
    return "\n".join(lines)
