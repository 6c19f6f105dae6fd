"""Adversarial training step cost over its floor, side by side in one run.

    python bench/step_cost.py [--batch 128] [--attack-steps 2] [--repeats 10] [--threads 2]

For each method, the time of one :func:`trainables.training.training_step` (attack with K steps,
loss, optimiser step) is divided by the floor ``(K + 1) x`` the time of one forward + backward of
the image encoder at the same batch: K attack gradients plus one training gradient is the least
any adversarial step can do. Also prints the method's step over TeCoA's at equal K and batch.
Timings interleave the measured functions round by round, and report medians, so a noisy
machine slows them alike.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from dataclasses import replace

import torch


def _median_seconds(function, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--attack-steps", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--methods", default="tecoa,hrz-forest")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from trainables.data.embedded import load_embedded
    from trainables.hierarchy.shipped import load_shipped
    from trainables.methods import TrainingAttack, build_method, method_settings
    from trainables.pretrain import load_or_pretrain_base
    from trainables.training import OptimSettings, build_optimizer, training_step

    forest = load_shipped("embedded")
    base = load_or_pretrain_base().loaded
    split = load_embedded().split("train")
    images = split.images[: args.batch].float().div(255)
    labels = split.labels[: args.batch]

    steps = {}
    methods = [name.strip() for name in args.methods.split(",")]
    for name in methods:
        settings = method_settings(name)
        attack = replace(settings.attack, steps=args.attack_steps)
        settings = replace(settings, attack=TrainingAttack(**attack.__dict__))
        loaded = replace(base, model=copy.deepcopy(base.model))
        method = build_method(settings, loaded, forest, calibration_images=images)
        optimizer = build_optimizer(method.parameters(), OptimSettings())

        def step(method=method, optimizer=optimizer):
            training_step(method, method.classifier, optimizer, images, labels)

        steps[name] = step

    floor_model = copy.deepcopy(base.model).train()

    def encoder_forward_backward():
        floor_model.zero_grad(set_to_none=True)
        features = floor_model.encode_image(images)
        features.square().mean().backward()

    timings = {name: [] for name in ["floor", *methods]}
    for _ in range(3):  # rounds interleave the measurements
        timings["floor"].append(_median_seconds(encoder_forward_backward, args.repeats))
        for name in methods:
            timings[name].append(_median_seconds(steps[name], max(2, args.repeats // 2)))
    seconds = {name: statistics.median(values) for name, values in timings.items()}
    floor = (args.attack_steps + 1) * seconds["floor"]
    print(
        f"model {base.name}, batch {args.batch}, K={args.attack_steps} attack steps, "
        f"{torch.get_num_threads()} threads"
    )
    print(
        f"  encoder forward+backward: {seconds['floor'] * 1000:.1f} ms; floor (K+1)x: "
        f"{floor * 1000:.1f} ms"
    )
    for name in methods:
        print(
            f"  {name:<11} step {seconds[name] * 1000:7.1f} ms  over floor "
            f"{seconds[name] / floor:.3f}"
        )
    if "tecoa" in seconds:
        for name in methods:
            if name != "tecoa":
                print(f"  {name} / tecoa step: {seconds[name] / seconds['tecoa']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
