"""`raysearch compare`: the mini-replication of every method on the embedded default."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

from raysearch.report import format_attack, format_eps, show_progress_logs
from trainables.errors import must
from trainables.outputs import check_output_file


def _argument_error(field: str, constraint: str, got) -> argparse.ArgumentTypeError:
    # argparse replaces the message of a ValueError from a type function; this type keeps it.
    return argparse.ArgumentTypeError(str(must(field, constraint, got)))


def parse_eps(text: str) -> float:
    """``"4/255"``, ``"0.0157"`` -> float; one clear line on anything else."""
    try:
        value = float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise _argument_error("eps", "a number such as 4/255 or 0.0157", text) from None
    if not 0 < value <= 1:
        raise _argument_error("eps", "in (0, 1] (pixel units of [0, 1] images)", text)
    return value


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _seeds(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(seed) for seed in text.split(",") if seed.strip())
    except ValueError:
        raise _argument_error("seeds", "comma-separated integers such as 0,1,2", text) from None


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="fine-tune every method on the embedded default and print one robustness table",
        description="Fine-tune each method from the tiny base CLIP on the embedded dataset with "
        "the same budget and seed, attack all of them the same way, and print clean, robust "
        "and per-superclass-level accuracy side by side.",
    )
    parser.add_argument(
        "--methods",
        type=_names,
        default=None,
        help="comma-separated methods from clip,tecoa,pmg,fare,hrz,hrz-forest and the variants "
        "hrz-forest+margins, hrz-forest/leaf-attack, hrz-forest/per-level-attack (default: all)",
    )
    parser.add_argument(
        "--seeds", type=_seeds, default=None, help="comma-separated seeds (default 0,1,2,3,4)"
    )
    parser.add_argument("--steps", type=int, default=None, help="optimiser steps per method")
    parser.add_argument("--epochs", type=float, default=None, help="epochs per method")
    parser.add_argument("--batch-size", type=int, default=None, help="batch size")
    parser.add_argument(
        "--lr",
        type=float,
        default=None,
        help="one peak learning rate for every method (default: each method's own, chosen on "
        "the validation split; trainables.compare.LEARNING_RATES)",
    )
    parser.add_argument("--eps", type=parse_eps, default=None, help="training eps, e.g. 4/255")
    parser.add_argument("--attack-steps", type=int, default=None, help="training PGD steps")
    parser.add_argument("--eval-eps", type=parse_eps, default=None, help="evaluation eps")
    parser.add_argument("--eval-steps", type=int, default=None, help="evaluation PGD steps")
    parser.add_argument("--eval-samples", type=int, default=None, help="test images attacked")
    parser.add_argument("--train-size", type=int, default=None, help="training images used")
    parser.add_argument(
        "--suite", default=None, help="zero-shot suite (default embedded-zeroshot; none: skip)"
    )
    parser.add_argument(
        "--suite-samples", type=int, default=None, help="test images per suite dataset"
    )
    parser.add_argument(
        "--check-samples",
        type=int,
        default=None,
        help="images of the AutoAttack and gradient-free checks (first seed; 0 skips them)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.set_defaults(handler=run)


def settings_from_args(args: argparse.Namespace):
    from trainables.compare import CompareSettings

    settings = CompareSettings()
    if args.seeds is not None:
        settings = replace(settings, seeds=tuple(args.seeds))
    if args.methods is not None:
        settings = replace(settings, methods=tuple(args.methods))
    optim = {}
    for flag, name in (
        ("steps", "max_steps"),
        ("epochs", "epochs"),
        ("batch_size", "batch_size"),
        ("lr", "lr"),
    ):
        if getattr(args, flag) is not None:
            optim[name] = getattr(args, flag)
    if args.steps is not None and args.epochs is None:
        optim["epochs"] = 1000.0  # the step count decides
    evaluation = {}
    if args.eval_eps is not None:
        evaluation["eps"] = args.eval_eps
    if args.eval_steps is not None:
        evaluation["steps"] = args.eval_steps
    changes = {}
    if args.eps is not None:
        changes["eps"] = args.eps
    if args.attack_steps is not None:
        changes["attack_steps"] = args.attack_steps
    if args.eval_samples is not None:
        changes["eval_samples"] = args.eval_samples
    if args.train_size is not None:
        changes["train_size"] = args.train_size
    if args.suite is not None:
        changes["suite"] = None if args.suite == "none" else args.suite
    if args.suite_samples is not None:
        changes["suite_samples"] = args.suite_samples
    if args.check_samples is not None:
        changes["check_samples"] = args.check_samples
    if args.lr is not None:
        changes["learning_rates"] = None
    return replace(
        settings,
        optim=replace(settings.optim, **optim),
        evaluation=replace(settings.evaluation, **evaluation),
        **changes,
    )


def _learning_rates(settings: dict) -> str:
    rates = settings.get("learning_rates")
    if not rates:
        return f"{settings['optim']['lr']:g}"
    return ", ".join(f"{name} {lr:g}" for name, lr in rates.items()) + " (validation-selected)"


def run(args: argparse.Namespace) -> int:
    from trainables.compare import run_compare
    from trainables.data.embedded import load_embedded
    from trainables.hierarchy.shipped import load_shipped
    from trainables.pretrain import load_or_pretrain_base

    settings = settings_from_args(args)
    if args.json is not None:
        args.json = check_output_file(args.json, "--json")
    show_progress_logs()
    started = time.perf_counter()
    dataset = load_embedded()
    forest = load_shipped("embedded")
    base = load_or_pretrain_base()
    results = run_compare(
        settings,
        base=base.loaded,
        forest=forest,
        dataset=dataset,
        on_result=lambda row: print(_progress_line(row), flush=True),
    )
    results["wall_seconds"] = round(time.perf_counter() - started, 1)
    written = _write_results(results, args.json) if args.json is not None else None
    print(format_compare_table(results))
    if written is not None:
        print(f"results written to {written}")
    return 0


def _write_results(results: dict, path: Path) -> Path:
    """Write the JSON first (the numbers outlast any formatting problem); when ``path`` became
    unwritable during the run, into a temporary file instead, so that no result is lost."""
    text = json.dumps(results, indent=2, default=str)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path
    except OSError as error:
        with tempfile.NamedTemporaryFile(
            "w", prefix="raysearch-compare-", suffix=".json", delete=False
        ) as file:
            file.write(text)
        fallback = Path(file.name)
        print(
            f"raysearch: could not write {path} ({error.strerror}); wrote {fallback} instead",
            file=sys.stderr,
        )
        return fallback


def _progress_line(row: dict) -> str:
    profile = row["profile"]
    line = (
        f"  {row['method']:<27} seed {row['seed']}: trained {row['train']['steps']} steps in "
        f"{row['train']['seconds']:.0f} s, evaluated in {row['eval_seconds']:.0f} s; clean "
        f"{profile['clean_leaf']:.3f} robust {profile['robust_leaf']:.3f}"
    )
    if "zeroshot" in row:
        average = row["zeroshot"]["average"]
        line += f"; zero-shot clean {average['clean']:.3f} robust {average['robust']:.3f}"
    return line


def _cell(stats: dict | None) -> str:
    if stats is None:
        return "-"
    text = f"{stats['mean']:.3f}"
    return text if stats["n"] < 2 else text + f"±{stats['ci95']:.3f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(line[i])) for line in [header, *rows]) for i in range(len(header))]
    lines = [
        " | ".join(str(value).ljust(width) for value, width in zip(line, widths, strict=True))
        for line in [header, *rows]
    ]
    lines.insert(1, "-+-".join("-" * width for width in widths))
    return lines


def format_compare_table(results: dict) -> str:
    """The in-distribution table, the zero-shot table, the checks, and the claims' verdicts.

    Cells are means over seeds with the 95% interval half-width (Student t); every number is
    on the test split, which nothing selected on.
    """
    summary = results["summary"]
    settings = results["settings"]
    first = next(iter(summary.values()))
    levels = [key[: -len(" level")] for key in first if key.endswith(" level")]
    lines = ["In-distribution (embedded test split, classes fine-tuned on):"]
    header = ["method", "clean", "robust"] + [f"{name} lvl/leaf" for name in levels]
    header += ["transfer", "train s"]
    rows = []
    for method, columns in summary.items():
        row = [method, _cell(columns["clean leaf"]), _cell(columns["robust leaf"])]
        for name in levels:
            row.append(f"{_cell(columns[name + ' level'])}/{_cell(columns[name + ' leaf'])}")
        row += [_cell(columns["transfer"]), f"{columns['train seconds']['mean']:.0f}"]
        rows.append(row)
    lines += _table(header, rows)
    datasets = [key[: -len(" clean")] for key in first if key.endswith(" clean")]
    datasets = [name for name in datasets if name != "zeroshot"]
    if datasets:
        lines.append("")
        lines.append(f"Zero-shot ({settings['suite']}, test split, classes never fine-tuned on):")
        header = ["method", "avg clean", "avg robust"] + [
            f"{name.removeprefix('embedded-')} c/r" for name in datasets
        ]
        rows = []
        for method, columns in summary.items():
            row = [method, _cell(columns["zeroshot clean"]), _cell(columns["zeroshot robust"])]
            for name in datasets:
                row.append(f"{_cell(columns[name + ' clean'])}/{_cell(columns[name + ' robust'])}")
            rows.append(row)
        lines += _table(header, rows)
    checks = [row for row in results["rows"] if "checks" in row]
    if checks:
        lines.append("")
        lines.append(
            f"Attack-strength checks (seed {checks[0]['seed']}, "
            f"{checks[0]['checks']['samples']} test images, eps {format_eps(settings['eps'])}):"
        )
        header = ["method", "PGD-20", "Square", "worst", "AA leaf", "AA superclass min"]
        header += ["AA zero-shot", "at radius", "problems"]
        rows = []
        for row in checks:
            check = row["checks"]
            strength = check["strength"]
            superclass = [v for k, v in check["autoattack"].items() if k != "leaf"]
            radius = strength["at_projection_radius"]
            rows.append(
                [
                    row["method"],
                    f"{strength['pgd']:.3f}",
                    f"{strength['square']:.3f}",
                    f"{strength['worst_case']:.3f}",
                    f"{check['autoattack']['leaf']:.3f}",
                    f"{min(superclass):.3f}" if superclass else "-",
                    f"{check['zeroshot_autoattack']['average']:.3f}"
                    if "zeroshot_autoattack" in check
                    else "-",
                    "-" if radius is None else f"{radius:.0%}",
                    "; ".join(strength["problems"]) or "none",
                ]
            )
        lines += _table(header, rows)
    evaluation = settings["evaluation"]
    optim = settings["optim"]
    lines.append("")
    lines.append(
        f"evaluation: {format_attack(evaluation)} on {settings['eval_samples']} test images "
        f"(zero-shot: {settings['suite_samples']} per dataset); training: {optim['optimizer']} "
        f"lr {_learning_rates(settings)}, batch {optim['batch_size']}, "
        f"PGD-{settings['attack_steps']} eps "
        f"{format_eps(settings['eps'])} ({settings['protocol'].split(':')[0]}); "
        f"seeds {settings['seeds']}; {results['seconds']:.0f} s"
    )
    lines.append(
        "cells: mean±95% interval over seeds; lvl/leaf: accuracy at that level / at the leaf "
        "under the attack on that level; transfer: mean leaf accuracy under the superclass attacks"
    )
    if results.get("claims"):
        lines.append("")
        lines.append("The paper's claims, here:")
        for claim in results["claims"]:
            lines.append(f"  {claim['claim']}: {claim['verdict'].upper()}")
            for comparison in claim.get("comparisons", []):
                d = comparison["difference"]
                if d is None:
                    continue
                lines.append(
                    f"    {comparison['a']} - {comparison['b']} on {comparison['column']}: "
                    f"{_cell(d)} -> {comparison['verdict']}"
                )
            if "ratio" in claim.get("numbers", {}):
                n = claim["numbers"]
                lines.append(
                    f"    CLIP zero-shot clean {_cell(n['clean'])}, robust {_cell(n['robust'])}"
                )
    return "\n".join(lines)
