"""Each method's learning rate for `raysearch compare`, chosen on the validation split.

    python bench/compare_lr.py [--methods tecoa,pmg,fare,hrz,hrz-forest] [--lrs 1e-4,2e-4,5e-4]
                               [--seeds 0,1] [--json FILE]

Fine-tunes every method at every learning rate and seed with compare's budget (its
``CompareSettings``: steps, batch, training attack) and scores each on the **validation** split:
leaf clean and PGD accuracy on 300 images of ``embedded``, and the zero-shot suite's average
clean and robust accuracy (150 images per dataset). The rule that picks a method's rate: the
highest mean over seeds of (zero-shot clean + zero-shot robust) / 2, the product's claim being
zero-shot. Prints one line per run, then the table of means and each method's choice, which is
what ``trainables.compare.LEARNING_RATES`` should hold. Nothing here reads the test split.
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import replace


def score(name: str, lr: float, seed: int, settings, base, forest, train, val) -> dict:
    from trainables.compare import fine_tune
    from trainables.evaluate import attacked_accuracy, level_accuracy
    from trainables.suites import evaluate_suite

    optim = replace(settings.optim, seed=seed, lr=lr)
    method, _ = fine_tune(name, seed, settings, base, forest, train, optim)
    evaluator = method.classifier.with_forest(forest).eval()
    tree = forest.trees[0].name
    evaluation = replace(settings.evaluation, seed=seed)
    suite = evaluate_suite(
        evaluator,
        settings.suite,
        split="val",
        samples=settings.suite_samples,
        eps=(evaluation.eps,),
        steps=evaluation.steps,
        profile=False,
        seed=seed,
    )
    robust = attacked_accuracy(evaluator, val.images, val.labels, evaluation, tree=tree)
    return {
        "method": name,
        "lr": lr,
        "seed": seed,
        "clean": level_accuracy(evaluator, val.images, val.labels)[tree][0],
        "robust": robust[tree][0],
        "zeroshot_clean": suite["average"]["clean"],
        "zeroshot_robust": suite["average"]["robust"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="tecoa,pmg,fare,hrz,hrz-forest")
    parser.add_argument("--lrs", default="1e-4,2e-4,5e-4")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--json", default=None, help="write every run's numbers here")
    args = parser.parse_args()
    from trainables.compare import CompareSettings
    from trainables.data.embedded import load_embedded
    from trainables.hierarchy.shipped import load_shipped
    from trainables.pretrain import load_or_pretrain_base

    settings = CompareSettings()
    base = load_or_pretrain_base().loaded
    forest = load_shipped("embedded")
    data = load_embedded()
    train = data.split("train").subset(settings.train_size)
    val = data.split("val").subset(settings.eval_samples)
    methods = args.methods.split(",")
    lrs = [float(value) for value in args.lrs.split(",")]
    seeds = [int(value) for value in args.seeds.split(",")]
    runs = []
    for name in methods:
        for lr in lrs:
            for seed in seeds:
                runs.append(score(name, lr, seed, settings, base, forest, train, val))
                print(json.dumps(runs[-1]), flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(runs, handle, indent=1)
    columns = ("clean", "robust", "zeroshot_clean", "zeroshot_robust")
    print(f"\nvalidation split, mean over seeds {seeds}:")
    print(f"{'method':12s} {'lr':>8s} " + " ".join(f"{c:>15s}" for c in columns) + "  rule")
    for name in methods:
        best, best_value = None, -1.0
        for lr in lrs:
            mine = [run for run in runs if run["method"] == name and run["lr"] == lr]
            means = {c: statistics.mean(run[c] for run in mine) for c in columns}
            value = (means["zeroshot_clean"] + means["zeroshot_robust"]) / 2
            if value > best_value:
                best, best_value = lr, value
            cells = " ".join(f"{means[c]:15.3f}" for c in columns)
            print(f"{name:12s} {lr:8.0e} {cells}  {value:.4f}")
        print(f"{name:12s} chosen lr {best:g}")


if __name__ == "__main__":
    main()
