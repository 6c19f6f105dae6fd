"""What adding the clustered tree ``embedded-text`` to the three hand-made trees does, side by
side in one run.

    python bench/text_tree_effect.py [--seeds 0,1,2] [--json FILE]

Fine-tunes ``hrz-forest`` from the base model with ``raysearch compare``'s budget and training
attack (its ``CompareSettings``), once on the ``embedded`` forest (form, symmetry, corners) and
once on that forest plus ``embedded-text``, for every seed, and scores both on the zero-shot
suite ``embedded-zeroshot`` (clean and PGD-10 at its headline eps; 150 images per dataset) and on
the fine-tuning classes (leaf clean and PGD at compare's eps, 300 images), on the validation
split and on the test split. Prints one line per run, then per split the mean of each column
and the paired difference (with text tree minus without) with its 95% interval over seeds.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace


def score(forest, seed: int, settings, base, train, splits) -> dict:
    from trainables.compare import fine_tune
    from trainables.evaluate import attacked_accuracy, level_accuracy
    from trainables.suites import evaluate_suite

    optim = replace(settings.optim, seed=seed, lr=settings.lr_of("hrz-forest"))
    method, _ = fine_tune("hrz-forest", seed, settings, base, forest, train, optim)
    evaluator = method.classifier.with_forest(forest).eval()
    tree = forest.trees[0].name
    evaluation = replace(settings.evaluation, seed=seed)
    out = {"trees": list(forest.names), "seed": seed}
    for split, data in splits.items():
        suite = evaluate_suite(
            evaluator,
            settings.suite,
            split=split,
            samples=settings.suite_samples,
            profile=False,
            seed=seed,
        )
        robust = attacked_accuracy(evaluator, data.images, data.labels, evaluation, tree=tree)
        out[split] = {
            "clean": level_accuracy(evaluator, data.images, data.labels)[tree][0],
            "robust": robust[tree][0],
            "zeroshot_clean": suite["average"]["clean"],
            "zeroshot_robust": suite["average"]["robust"],
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--json", default=None, help="write every run's numbers here")
    args = parser.parse_args()
    from trainables.compare import CompareSettings
    from trainables.compare_claims import interval
    from trainables.data.embedded import load_embedded
    from trainables.hierarchy.shipped import load_shipped
    from trainables.hierarchy.tree import Forest
    from trainables.pretrain import load_or_pretrain_base

    settings = CompareSettings()
    base = load_or_pretrain_base().loaded
    hand_made = load_shipped("embedded")
    with_text = Forest([*hand_made.trees, load_shipped("embedded-text")])
    data = load_embedded()
    train = data.split("train").subset(settings.train_size)
    splits = {split: data.split(split).subset(settings.eval_samples) for split in ("val", "test")}
    seeds = [int(value) for value in args.seeds.split(",")]
    runs = []
    for seed in seeds:
        for forest in (hand_made, with_text):
            runs.append(score(forest, seed, settings, base, train, splits))
            print(json.dumps(runs[-1]), flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(runs, handle, indent=1)
    columns = ("clean", "robust", "zeroshot_clean", "zeroshot_robust")
    for split in splits:
        print(f"\n{split} split, {len(seeds)} seeds: without / with embedded-text, difference")
        for column in columns:
            without = [run[split][column] for run in runs if len(run["trees"]) == 3]
            within = [run[split][column] for run in runs if len(run["trees"]) == 4]
            difference = interval([b - a for a, b in zip(without, within, strict=True)])
            print(
                f"  {column:16s} {sum(without) / len(without):.3f} / "
                f"{sum(within) / len(within):.3f}   {difference['mean']:+.3f} "
                f"+- {difference['ci95']:.3f}"
            )


if __name__ == "__main__":
    main()
