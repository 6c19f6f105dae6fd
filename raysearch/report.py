"""Human-readable tables of what the evaluators return (the evaluators never print)."""

from __future__ import annotations

from trainables.radii import format_eps  # noqa: F401  (re-exported: the CLI's formatter)


def format_attack(attack: dict) -> str:
    return (
        f"PGD-{attack['steps']} {attack['norm'].replace('linf', 'L-inf')} "
        f"eps={format_eps(attack['eps'])} step={format_eps(attack['step_size'])}"
    )


def format_zero_shot_report(
    report: dict, *, level_sizes: dict[str, list[int]] | None = None
) -> str:
    """A table of clean accuracy per tree and level, the leaf accuracy under attack, and (when
    measured) the zero-shot suite's clean and robust accuracy per dataset."""
    templates = ", ".join(f'"{t}"' for t in report["templates"])
    split = report.get("zeroshot", {}).get("split", "test")
    lines = [
        f"zero-shot accuracy on {report['samples']} {split} images of the fine-tuning classes "
        f"(prompt {templates})"
    ]
    lines.append(f"  {'tree':<10} {'level':>5} {'classes':>7} {'clean':>7}")
    leaf_done = False
    for tree, levels in report["clean"].items():
        for level, accuracy in sorted(levels.items(), key=lambda item: int(item[0])):
            if int(level) == 0:
                if leaf_done:
                    continue
                leaf_done, tree_shown = True, "(leaves)"
            else:
                tree_shown = tree
            size = ""
            if level_sizes and tree in level_sizes:
                size = str(level_sizes[tree][int(level)])
            lines.append(f"  {tree_shown:<10} {int(level):>5} {size:>7} {accuracy:>7.3f}")
    attacked = report["pgd_leaf"]
    lines.append(f"leaf accuracy under {format_attack(attacked['attack'])}: {attacked['leaf']:.3f}")
    suite = report.get("zeroshot")
    if suite:
        lines.append(
            f"zero-shot suite {suite['suite']} ({split} split, under "
            f"{format_attack(suite['settings']['attack'])}):"
        )
        lines.append(f"  {'dataset':<26} {'classes':>7} {'clean':>7} {'robust':>7}")
        for name, result in suite["datasets"].items():
            lines.append(
                f"  {name:<26} {result['classes']:>7} {result['clean']:>7.3f} "
                f"{result['robust']:>7.3f}"
            )
    return "\n".join(lines)


def show_progress_logs() -> None:
    """Print the project's own INFO progress lines (not those of open_clip, Ray or MLflow)."""
    import logging

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    for name in ("trainables", "raysearch"):
        logger = logging.getLogger(name)
        if not logger.handlers:
            logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False  # libraries may have configured the root logger too
