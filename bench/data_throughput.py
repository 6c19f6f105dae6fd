"""Streaming loader throughput against the training step's consumption, side by side in one run.

    python bench/data_throughput.py [--images 512] [--batch 16] [--loader-workers 0,1,2]
        [--attack-steps 3] [--threads 2] [--device cpu] [--precision fp32]

On a GPU (the check for a lent accelerator):

    python bench/data_throughput.py --device cuda --batch 256 --precision bf16 \\
        --loader-workers 4,8,15 --images 4096 --forest imagenet1k-wordnet

Writes ``--images`` JPEGs of ImageNet's typical size (500 x 375) into a temporary image folder,
then measures (1) the images per second the training DataLoader delivers at 224 px (decode,
random resized crop, flip) with each number of loader processes, and the growth of this
process's resident memory over one pass; (2) the images per second one training step of the
method consumes: ViT-B-32 (random weights; nothing is downloaded), ``hrz-forest`` with the
universal PGD attack of ``--attack-steps`` steps at eps 1/255 and the text perturbation (2e-4),
at ``--batch`` on ``--device``. It prints loader / step for each loader count (the loader is not
the bottleneck while the ratio exceeds 1), and on CUDA the step's peak memory and the projected
time of one ImageNet-1k epoch (1,281,167 images) on this one device.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

IMAGENET_TRAIN_IMAGES = 1_281_167


def _write_folder(root: Path, images: int, classes: int = 4) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(images):
        folder = root / "train" / f"class_{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        # Smooth noise compresses like a photograph, not like white noise.
        coarse = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
        picture = Image.fromarray(coarse).resize((500, 375), Image.Resampling.BILINEAR)
        picture.save(folder / f"{i:06d}.JPEG", "JPEG", quality=90)


def _resident_bytes() -> int:
    with open("/proc/self/statm") as file:
        return int(file.read().split()[1]) * 4096


def loader_rate(root: Path, batch: int, workers: int) -> tuple[float, int]:
    """(images per second over one pass, resident-memory growth in bytes)."""
    from trainables.data.image_files import ImageFiles, index_split

    dataset = ImageFiles(index_split(root, "train"), 224, train=True, seed=0)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True
    )
    iterator = iter(loader)
    next(iterator)  # start-up (process spawn, first decode) is not throughput
    before, started = _resident_bytes(), time.perf_counter()
    seen = sum(len(images) for images, _ in iterator)
    return seen / (time.perf_counter() - started), _resident_bytes() - before


def step_rate(args) -> tuple[float, float, float | None]:
    """(images per second, seconds per step, peak CUDA memory in GiB or None)."""
    import open_clip

    from trainables.backbone import LoadedClip
    from trainables.hierarchy.shipped import load_shipped
    from trainables.hierarchy.tree import ClassTree, Forest, as_forest
    from trainables.methods import TrainingAttack, build_method, method_settings
    from trainables.training import OptimSettings, build_optimizer, training_step

    device = torch.device(args.device)
    model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32")
    normalize = next(t for t in preprocess.transforms if hasattr(t, "mean"))
    loaded = LoadedClip(
        model=model.to(device),
        tokenizer=open_clip.get_tokenizer("ViT-B-32"),
        mean=tuple(normalize.mean),
        std=tuple(normalize.std),
        image_size=224,
        name="ViT-B-32",
        pretrained=None,
    )
    if args.forest == "small":
        leaves = tuple(f"class {i}" for i in range(8))
        parents = {leaf: f"group {i % 2}" for i, leaf in enumerate(leaves)}
        forest = Forest([ClassTree.from_parents("small", parents, leaves=leaves)])
    else:
        forest = as_forest(load_shipped(args.forest))
    attack = TrainingAttack(eps=1 / 255, steps=args.attack_steps, text_eps=2e-4)
    settings = method_settings("hrz-forest", attack=attack)
    images = torch.rand(args.batch, 3, 224, 224, device=device)
    labels = torch.randint(0, len(forest.leaves), (args.batch,), device=device)
    method = build_method(settings, loaded, forest, calibration_images=images[:32])
    method.to(device)
    optim = OptimSettings(batch_size=args.batch, lr=1e-5, precision=args.precision)
    optimizer = build_optimizer(method.parameters(), optim)

    def step():
        training_step(
            method, method.classifier, optimizer, images, labels, precision=args.precision
        )
        if device.type == "cuda":
            torch.cuda.synchronize()

    step()  # warm-up: kernels, allocator
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    seconds = statistics.median(times)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    return args.batch / seconds, seconds, peak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--loader-workers", default="0,1,2")
    parser.add_argument("--attack-steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--forest", default="small", help="small, or a shipped forest")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    consumed, seconds, peak = step_rate(args)
    print(
        f"training step: ViT-B-32 hrz-forest, universal PGD-{args.attack_steps} + text eps, "
        f"batch {args.batch}, {args.precision} on {args.device} ({args.forest} forest): "
        f"{seconds:.3f} s/step, {consumed:.1f} images/s"
    )
    if peak is not None:
        epoch = IMAGENET_TRAIN_IMAGES / consumed
        print(f"  peak memory {peak:.1f} GiB; one ImageNet-1k epoch: {epoch / 60:.1f} min")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        started = time.perf_counter()
        _write_folder(root, args.images)
        print(f"wrote {args.images} JPEGs (500x375) in {time.perf_counter() - started:.1f} s")
        for workers in (int(n) for n in args.loader_workers.split(",")):
            rate, grown = loader_rate(root, args.batch, workers)
            print(
                f"  loader, {workers} worker process(es): {rate:7.1f} images/s at 224 px "
                f"({rate / max(workers, 1):.1f} per process); loader / step = "
                f"{rate / consumed:.2f}; resident memory grew {grown / 2**20:.1f} MiB"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
