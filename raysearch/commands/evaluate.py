"""`raysearch evaluate`: the robustness evaluation of any model, in-distribution or zero-shot."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from raysearch.commands.compare import parse_eps
from raysearch.commands.models import add_store_options, tracking_uri

ATTACKS = ("pgd", "autoattack")
#: ``--model`` value that evaluates the embedded base CLIP itself (no fine-tuning).
BASE_MODEL = "embedded"


def _eps_list(text: str) -> tuple[float, ...]:
    return tuple(parse_eps(part) for part in text.split(",") if part.strip())


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="clean and robust accuracy of a model, on its own classes or a zero-shot suite",
        description="Evaluate a model (models:/NAME@ALIAS, a training run id, a model folder, or "
        "`embedded` for the embedded base CLIP itself). Without --suite: on its own dataset, "
        "clean accuracy at every level of every tree and, with pgd, the per-level robustness "
        "profile (leaf attack, each superclass level under its own attack, transfer to the "
        "leaves); with autoattack (APGD-CE + APGD-T) the leaf accuracy. With --suite: on every "
        "dataset of a zero-shot suite (classes the model was never fine-tuned on), clean and "
        "PGD accuracy at each eps, per-level profiles, and averages.",
    )
    parser.add_argument(
        "--model", required=True, help="models:/NAME@ALIAS, a run id, a folder, or `embedded`"
    )
    parser.add_argument("--suite", default=None, help="a zero-shot suite, e.g. embedded-zeroshot")
    parser.add_argument(
        "--split",
        choices=("val", "test"),
        default="test",
        help="split evaluated (default test: a report; selection reads val)",
    )
    parser.add_argument(
        "--data", default=None, help="dataset (default: the one the model was trained on)"
    )
    parser.add_argument("--data-root", default=None, help="folder of torchvision datasets")
    parser.add_argument(
        "--samples",
        type=int,
        default=None,
        help="images evaluated (default 1000; with --suite each dataset's own cap)",
    )
    parser.add_argument("--attack", choices=ATTACKS, default="pgd", help="pgd or autoattack")
    parser.add_argument(
        "--eps",
        type=_eps_list,
        default=None,
        help="radius, or with --suite comma-separated radii (default 4/255; the suite's own)",
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="attack steps (default: pgd 10, autoattack 100)"
    )
    parser.add_argument(
        "--autoattack",
        action="store_true",
        help="with --suite: also AutoAttack at the headline eps, leaf and every superclass level",
    )
    parser.add_argument("--plot", type=Path, default=None, help="with --suite: write a PNG here")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    add_store_options(parser)
    parser.set_defaults(handler=run)


def _load_model(model: str, args: argparse.Namespace):
    """``(classifier, dataset it was fine-tuned on, data root)`` of any ``--model`` value."""
    if model == BASE_MODEL:
        from trainables.hierarchy.shipped import load_shipped
        from trainables.model import ZeroShotClassifier
        from trainables.pretrain import load_or_pretrain_base

        base = load_or_pretrain_base()
        return ZeroShotClassifier(base.loaded, load_shipped("embedded")).eval(), "embedded", None
    from raysearch.config import config_from_dict
    from raysearch.model_package import CONFIG_FILE, fetch_package, load_classifier
    from trainables.readers import read_json

    with tempfile.TemporaryDirectory() as scratch:
        package = fetch_package(model, tracking_uri(args), Path(scratch))
        config = config_from_dict(read_json(package / CONFIG_FILE))
        classifier = load_classifier(package)
    return classifier, config.data.dataset, config.data.root


def run(args: argparse.Namespace) -> int:
    from trainables.errors import must

    if args.samples is not None and args.samples < 1:
        raise must("--samples", ">= 1", args.samples)
    if args.steps is not None and args.steps < 1:
        raise must("--steps", ">= 1", args.steps)
    if args.eps is not None and not args.eps:
        raise must("--eps", "one or more radii such as 4/255", "")
    if args.suite is None:
        if args.plot is not None or args.autoattack:
            raise must("--plot and --autoattack", "used with --suite", "no --suite")
        if args.eps is not None and len(args.eps) > 1:
            raise must("--eps", "one radius without --suite", ",".join(map(str, args.eps)))
    else:
        from trainables.suites import get_suite

        get_suite(args.suite)  # an unknown name fails before any model is loaded
        if args.data is not None:
            raise must("--data", "left out with --suite (the suite names its datasets)", args.data)
    classifier, dataset, root = _load_model(args.model, args)
    if args.suite is not None:
        report = _suite_report(classifier, dataset, root, args)
    else:
        report = _dataset_report(classifier, dataset, root, args)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print(format_suite(report) if args.suite else format_report(report))
    if args.plot is not None:
        write_plot({args.model: report}, args.plot)
        if not args.json:
            print(f"plot: {args.plot}")
    return 0


def _suite_report(classifier, dataset: str, root, args: argparse.Namespace) -> dict:
    from trainables.suites import check_disjoint, check_on_disk, evaluate_suite, get_suite

    suite = get_suite(args.suite)
    check_disjoint(suite, classifier.forest)
    check_on_disk(suite, args.data_root or root)  # every dataset, before the first is attacked
    report = evaluate_suite(
        classifier,
        suite,
        split=args.split,
        samples=args.samples,
        eps=args.eps,
        steps=args.steps,
        autoattack=args.autoattack,
        data_root=args.data_root or root,
        fine_tuned_on=dataset,
    )
    return {"model": args.model, "fine_tuned_on": dataset, **report}


def _dataset_report(classifier, dataset: str, root, args: argparse.Namespace) -> dict:
    from trainables.data.class_lists import dataset_classes
    from trainables.data.registry import load_split
    from trainables.errors import must
    from trainables.evaluate import AttackSettings, autoattack_accuracy, robustness_profile

    dataset = args.data or dataset
    leaves = tuple(classifier.forest.leaves)
    if dataset_classes(dataset, args.data_root or root) != leaves:
        raise must(
            "--data",
            f"a dataset with the model's {len(leaves)} classes (zero-shot datasets: --suite)",
            dataset,
        )
    data = load_split(
        dataset,
        args.split,
        root=args.data_root or root,
        image_size=classifier.image_size,
        samples=args.samples or 1000,
    )
    eps = args.eps[0] if args.eps else 4 / 255
    if args.attack == "pgd":
        attack = AttackSettings(eps=eps, steps=args.steps or 10)
        report = robustness_profile(classifier, data.images, data.labels, attack)
    else:
        report = autoattack_accuracy(
            classifier, data.images, data.labels, eps=eps, steps=args.steps or 100
        )
    return {"model": args.model, "dataset": dataset, "split": args.split, **report}


def format_report(report: dict) -> str:
    """Plain-text lines of a robustness profile or an AutoAttack result."""
    from raysearch.report import format_attack, format_eps

    lines = [f"{report['model']} on {report['dataset']} ({report['split']} split)"]
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
        settings = report["settings"]
        lines.append(
            f"AutoAttack ({', '.join(settings['attacks'])}, {settings['steps']} steps, L-inf "
            f"eps={format_eps(settings['eps'])}): {settings['tree']} level {settings['level']} "
            f"accuracy {report['accuracy']:.3f} on {settings['samples']} images"
        )
    return "\n".join(lines)


def format_suite(report: dict) -> str:
    """A table of a suite report: per dataset clean, PGD at each eps, AutoAttack; the average."""
    from raysearch.report import format_attack

    eps = report["settings"]["eps"]
    aa = report["settings"]["autoattack"] is not None
    header = f"  {'dataset':<26} {'classes':>7} {'clean':>6} " + " ".join(
        f"{'pgd ' + e:>10}" for e in eps
    )
    header += f" {'autoattack':>10}" if aa else ""
    in_distribution = [n for n, r in report["datasets"].items() if r.get("in_distribution")]
    scope = (
        f"{', '.join(in_distribution)} in-distribution (*), the rest zero-shot"
        if in_distribution
        else "every dataset below is zero-shot"
    )
    lines = [
        f"{report['model']} on suite {report['suite']} ({report['split']} split; fine-tuned on "
        f"{report['fine_tuned_on']}: {scope})",
        header,
    ]
    for name, result in report["datasets"].items():
        shown = f"{name} *" if result.get("in_distribution") else name
        row = f"  {shown:<26} {result['classes']:>7} {result['clean']:>6.3f} " + " ".join(
            f"{result['pgd'][e]:>10.3f}" for e in eps
        )
        if aa:
            row += f" {result['autoattack']['leaf']:>10.3f}"
        lines.append(row)
    averages = [("average" if not in_distribution else "average, zero-shot", report["average"])]
    if "average_all" in report:
        averages.append(("average, all", report["average_all"]))
    for label, average in averages:
        row = f"  {label:<26} {'':>7} {average['clean']:>6.3f} "
        row += f"{'robust ' + report['settings']['headline_eps']:>10}: {average['robust']:.3f}"
        if aa:
            row += f", autoattack {average['autoattack']:.3f}"
        lines.append(row)
    for name, result in report["datasets"].items():
        if "profile" in result:
            for tree, levels in result["profile"]["superclass_attacks"].items():
                cells = ", ".join(
                    f"level {level} {cell['level']:.3f} (leaf {cell['leaf']:.3f})"
                    for level, cell in levels.items()
                )
                lines.append(f"  {name} {tree}, under each level's own attack: {cells}")
        if "at_projection_radius" in result:
            lines.append(
                f"  {name}: {result['at_projection_radius']:.1%} of image embeddings sit at the "
                "projection radius (no radial gradient there)"
            )
    lines.append(
        f"attack: {format_attack(report['settings']['attack'])} at each eps, random start; "
        f"{report['seconds']:.0f} s"
    )
    return "\n".join(lines)


def write_plot(reports: dict[str, dict], path: Path) -> Path:
    """Average zero-shot accuracy against eps (0 = clean), one line per model or method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 3.5))
    for label, report in reports.items():
        keys = report["settings"]["eps"]
        xs = [0.0] + [value * 255 for value in report["settings"]["eps_values"]]
        datasets = report["datasets"].values()
        ys = [report["average"]["clean"]] + [
            sum(d["pgd"][key] for d in datasets) / len(report["datasets"]) for key in keys
        ]
        axis.plot(xs, ys, marker="o", label=label)
    axis.set_xlabel("L-inf eps (x/255)")
    axis.set_ylabel("zero-shot accuracy (suite average)")
    axis.set_ylim(0, 1)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
