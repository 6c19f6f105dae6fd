"""Contrastive pretraining of the tiny base CLIP on the embedded world, cached by content.

The embedded default needs a CLIP that knows more than the fine-tuning task: a real zero-shot
classifier at every level of every tree of the fine-tuning shapes, and of the zero-shot suite's
classes (held-out shapes, colours, sizes, backgrounds), which plain adversarial attacks break.
:func:`load_or_pretrain_base` pretrains one on ``embedded-world`` (captions composed by
:mod:`trainables.captions`, a multi-positive InfoNCE loss), evaluates it on the validation and
test splits, and caches weights and report under a key of everything that decides the weights
(:func:`base_model_key`). Later calls load the cache; concurrent callers on one
machine wait on a file lock instead of training twice.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from trainables.backbone import (
    EMBEDDED_ARCH,
    LoadedClip,
    create_architecture,
    load_weights,
    register_configs,
)
from trainables.cache import cache_dir, content_key, source_digest
from trainables.captions import CaptionMix, WorldCaptions
from trainables.errors import UserInputError, must
from trainables.evaluate import AttackSettings, zero_shot_report
from trainables.hierarchy.tree import as_forest
from trainables.model import ZeroShotClassifier
from trainables.readers import read_json

log = logging.getLogger(__name__)

#: The modules whose source decides the pretrained weights (recipe, captions, model creation):
#: their digest is part of the cache key, so no edit of them ever reuses a stale model.
PRETRAIN_SOURCES: tuple[str, ...] = (
    "trainables.pretrain",
    "trainables.captions",
    "trainables.backbone",
)
WEIGHTS_FILE = "weights.safetensors"
REPORT_FILE = "report.json"
#: The attack that shows the base model is attackable: PGD-10 at eps 8/255 (step eps/4). On 32x32
#: renders, 1/255-4/255 leave a normally trained model too much accuracy (README, "Embedded
#: default").
BASE_ATTACK = AttackSettings(eps=8 / 255, steps=10)
#: What the base model must reach on the test split: a real zero-shot classifier at the leaves and
#: at every tree's top level, and attackable at the leaves (under :data:`BASE_ATTACK`).
LEAF_BAR = 0.80
TOP_LEVEL_BAR = 0.90
PGD_LEAF_BAR = 0.20
#: The zero-shot suite the base model must know (clean) and lose under attack (robust at the
#: suite's headline eps, PGD-10): a dataset the attack cannot move would measure nothing.
BASE_SUITE = "embedded-zeroshot"
ZEROSHOT_CLEAN_BAR = 0.70
ZEROSHOT_ATTACK_DROP = 0.30
BASE_BARS: dict[str, str] = {
    "leaf": f">= {LEAF_BAR}",
    "every top level": f">= {TOP_LEVEL_BAR}",
    "leaf under PGD": f"< {PGD_LEAF_BAR}",
    "every zero-shot dataset, clean": f">= {ZEROSHOT_CLEAN_BAR}",
    "every zero-shot dataset, robust": f"at least {ZEROSHOT_ATTACK_DROP} below its clean accuracy",
}


@dataclass(frozen=True)
class PretrainSettings:
    """How the base CLIP is pretrained; every field is part of the cache key."""

    arch: str = EMBEDDED_ARCH
    steps: int = 1200
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 0.1
    warmup_steps: int = 100
    super_fraction: float = 0.2
    context_fraction: float = 0.2
    attribute_rate: float = 0.5
    generic_fraction: float = 0.15
    seed: int = 0

    @property
    def mix(self) -> CaptionMix:
        return CaptionMix(
            super_fraction=self.super_fraction,
            context_fraction=self.context_fraction,
            attribute_rate=self.attribute_rate,
            generic_fraction=self.generic_fraction,
        )

    def __post_init__(self):
        for name in ("steps", "batch_size"):
            if getattr(self, name) < 1:
                raise must(f"pretrain.{name}", ">= 1", getattr(self, name))
        if not self.lr > 0:
            raise must("pretrain.lr", "> 0", self.lr)


@dataclass
class BaseModel:
    loaded: LoadedClip
    path: Path
    report: dict = field(default_factory=dict)
    built: bool = False  # True when this call trained it, False when loaded from the cache


def _architecture_config(arch: str) -> dict:
    import open_clip

    register_configs()
    config = open_clip.get_model_config(arch)
    if config is None:
        raise must("pretrain.arch", "an open_clip model config", arch)
    return config


def forest_content(forest) -> list:
    """What the captions are made of, in order: each tree's name, node names and leaf-to-node maps.

    A list, not a dict, because the order of the trees orders the caption bank, which the
    sampling depends on.
    """
    return [
        [
            tree.name,
            [
                [list(tree.level_names(level)), tree.leaf_to_node(level).tolist()]
                for level in range(tree.depth + 1)
            ],
        ]
        for tree in forest.trees
    ]


def base_model_key(settings: PretrainSettings, dataset_key: str, forests) -> str:
    """Content key of everything that decides the pretrained weights.

    The architecture config, the settings, the pretraining dataset (its key covers the rendering
    code), the trees the captions come from (the fine-tuning forest, then the held-out shapes'),
    the source of :data:`PRETRAIN_SOURCES`, and the torch and open_clip versions (initialisation
    and kernels). Not the thread count or the CPU: they change the bits too, which is why the
    recipe must clear its bars with margin on every one of them.
    """
    import open_clip

    return content_key(
        {
            "config": _architecture_config(settings.arch),
            "settings": asdict(settings),
            "dataset": dataset_key,
            "forests": [forest_content(forest) for forest in forests],
            "code": source_digest(*PRETRAIN_SOURCES),
            "versions": {"torch": torch.__version__, "open_clip": open_clip.__version__},
        }
    )


def base_model_dir(settings: PretrainSettings, dataset_key: str, forests) -> Path:
    return cache_dir("models") / f"base-{base_model_key(settings, dataset_key, forests)}"


def bar_margins(report: dict, forest) -> dict[str, float]:
    """How far one split's section of a base model's report clears each bar (negative: missed).

    Keys: ``"leaf"``, ``"<tree>/<top level>"`` for every tree, ``"pgd_leaf"`` (the bar minus the
    attacked accuracy), and per zero-shot suite dataset ``"<dataset>/clean"`` (clean minus
    :data:`ZEROSHOT_CLEAN_BAR`) and ``"<dataset>/robust"`` (how much more than
    :data:`ZEROSHOT_ATTACK_DROP` the attack takes off the clean accuracy). Works on a fresh
    report (int levels) or one read back from JSON (string levels).
    """

    def clean(tree: str, level: int) -> float:
        levels = report["clean"][tree]
        return float(levels[level] if level in levels else levels[str(level)])

    margins = {"leaf": clean(forest.trees[0].name, 0) - LEAF_BAR}
    for tree in forest.trees:
        margins[f"{tree.name}/{tree.depth}"] = clean(tree.name, tree.depth) - TOP_LEVEL_BAR
    margins["pgd_leaf"] = PGD_LEAF_BAR - float(report["pgd_leaf"]["leaf"])
    for name, result in report.get("zeroshot", {}).get("datasets", {}).items():
        margins[f"{name}/clean"] = result["clean"] - ZEROSHOT_CLEAN_BAR
        margins[f"{name}/robust"] = result["clean"] - result["robust"] - ZEROSHOT_ATTACK_DROP
    return margins


@contextmanager
def _file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def contrastive_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    positives: torch.Tensor,
    logit_scale: torch.Tensor,
    known: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE in which every true caption in the batch is a positive, each pulled.

    Both directions average the log-probabilities of all positives (the "outside" multi-positive
    form of supervised contrastive learning), so an image must score every caption that is true
    of it (its leaf and each of its superclasses in every tree) above the false ones. With the
    log of a *sum* over positives instead, an image is done once its leaf caption wins, and
    superclasses that cut across visual similarity (the symmetry tree) stay unlearnt.

    Args:
        image_features: normalised [B, D]; text_features: normalised [U, D] (distinct captions).
        positives: bool [B, U], True where caption u is true of image b; every row and column
            has at least one True.
        known: bool [B, U] or None; pairs marked False (a caption naming an attribute the image
            has no name for) count neither as positives nor as negatives.
    """
    logits = logit_scale * image_features @ text_features.t()
    if known is not None:
        # A large finite fill, not -inf: the zero weights of these pairs must not make NaNs.
        logits = logits.masked_fill(~known, -1e9)
    weights = positives.float()
    image_to_text = -(logits.log_softmax(dim=1) * weights).sum(dim=1) / weights.sum(dim=1)
    text_to_image = -(logits.log_softmax(dim=0) * weights).sum(dim=0) / weights.sum(dim=0)
    return (image_to_text.mean() + text_to_image.mean()) / 2


def _cosine_lr(step: int, settings: PretrainSettings) -> float:
    if step < settings.warmup_steps:
        return settings.lr * (step + 1) / settings.warmup_steps
    progress = (step - settings.warmup_steps) / max(1, settings.steps - settings.warmup_steps)
    return settings.lr * 0.5 * (1 + math.cos(math.pi * progress))


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    # No decay on gains, biases, embeddings' scale-like parameters and the logit scale.
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if parameter.ndim < 2 or "logit_scale" in name or "positional_embedding" in name:
            no_decay.append(parameter)
        else:
            decay.append(parameter)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def world_captions(forest, heldout) -> WorldCaptions:
    """The caption vocabulary of the pretraining world: every shape, tree and attribute."""
    from trainables.data.embedded_taxonomy import ALL_SHAPES, BACKGROUNDS, COLOURS, SIZES

    trees = [*forest.trees, *heldout.trees]
    names = {"colour": tuple(COLOURS), "size": tuple(SIZES), "background": BACKGROUNDS}
    return WorldCaptions(ALL_SHAPES, trees, names)


def pretrain(loaded: LoadedClip, captions: WorldCaptions, train_split, settings) -> dict:
    """Train ``loaded.model`` in place on a split with attributes; returns timing figures."""
    model = loaded.model
    model.train()
    mix = settings.mix
    token_cache: dict[str, torch.Tensor] = {}
    mean = torch.tensor(loaded.mean).view(1, 3, 1, 1)
    std = torch.tensor(loaded.std).view(1, 3, 1, 1)
    generator = torch.Generator().manual_seed(settings.seed)
    # Fused: one kernel for all parameters; the unfused update took about an eighth of a step.
    optimizer = torch.optim.AdamW(
        _param_groups(model, settings.weight_decay), lr=settings.lr, fused=True
    )
    images_u8, attributes = train_split.images, train_split.attributes
    started = time.perf_counter()
    order = torch.randperm(len(attributes), generator=generator)
    cursor = 0
    for step in range(settings.steps):
        if cursor + settings.batch_size > len(order):
            order, cursor = torch.randperm(len(attributes), generator=generator), 0
        index = order[cursor : cursor + settings.batch_size]
        cursor += settings.batch_size
        batch_attributes = attributes[index]
        # The text tower only sees each distinct caption once: same gradients, far less work.
        distinct = list(dict.fromkeys(captions.sample(batch_attributes, generator, mix)))
        positives, known = captions.truth(batch_attributes, distinct)
        texts = [captions.text(caption) for caption in distinct]
        for text in texts:
            if text not in token_cache:
                token_cache[text] = loaded.tokenizer([text])[0]
        tokens = torch.stack([token_cache[text] for text in texts])
        images = (images_u8[index].float().div(255) - mean) / std
        for group in optimizer.param_groups:
            group["lr"] = _cosine_lr(step, settings)
        image_features = F.normalize(model.encode_image(images), dim=-1)
        text_features = F.normalize(model.encode_text(tokens), dim=-1)
        loss = contrastive_loss(
            image_features,
            text_features,
            positives,
            model.logit_scale.exp().clamp(max=100),
            known,
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            # CLIP's bound on the temperature: a logit scale of at most 100.
            model.logit_scale.clamp_(0, math.log(100))
        if step % 100 == 0 or step == settings.steps - 1:
            log.info("pretrain step %d/%d loss %.4f", step + 1, settings.steps, loss.item())
    seconds = time.perf_counter() - started
    # Hand back a model like a loaded one: no stale gradients, evaluation mode.
    model.zero_grad(set_to_none=True)
    model.eval()
    return {
        "seconds": round(seconds, 1),
        "images_per_second": round(settings.steps * settings.batch_size / seconds, 1),
        # The weights depend on these too: sums run in another order with another thread count
        # or CPU kernel set (README, "Base model").
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
    }


def _save(model: torch.nn.Module, directory: Path, report: dict) -> None:
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    state = {key: value.detach().contiguous().clone() for key, value in model.state_dict().items()}
    # Write to temporary names, then rename: an interrupted build never leaves a half cache.
    tmp_weights = directory / f".{WEIGHTS_FILE}.{os.getpid()}"
    save_file(state, str(tmp_weights))
    tmp_report = directory / f".{REPORT_FILE}.{os.getpid()}"
    tmp_report.write_text(json.dumps(report, indent=2))
    os.replace(tmp_weights, directory / WEIGHTS_FILE)
    os.replace(tmp_report, directory / REPORT_FILE)


def load_or_pretrain_base(
    settings: PretrainSettings | None = None,
    dataset_spec=None,
    *,
    world_spec=None,
    report_samples: int | None = None,
) -> BaseModel:
    """The embedded base CLIP: loaded from the cache, or pretrained, evaluated and cached.

    Args:
        settings: pretraining recipe (default :class:`PretrainSettings`).
        dataset_spec: the fine-tuning dataset's spec the report scores (default: ``embedded``).
        world_spec: the pretraining world's spec (default: ``embedded-world``).
        report_samples: images per split used for the report (default: 1000 of the fine-tuning
            dataset, each suite dataset's own cap).
    """
    from trainables.data.embedded import load_embedded
    from trainables.data.embedded_spec import embedded_spec
    from trainables.hierarchy.shipped import load_shipped

    settings = settings or PretrainSettings()
    spec = dataset_spec or embedded_spec("embedded")
    world = world_spec or embedded_spec("embedded-world")
    forest = load_shipped("embedded")
    heldout = as_forest(load_shipped("embedded-heldout-shapes"))
    dataset_key = spec.key()
    directory = base_model_dir(settings, world.key(), [forest, heldout])
    weights = directory / WEIGHTS_FILE
    with _file_lock(directory.with_suffix(".lock")):
        if weights.is_file():
            try:
                loaded = load_weights(create_architecture(settings.arch), weights)
                report = read_json(directory / REPORT_FILE)
            except UserInputError as error:  # a damaged entry is never silently rebuilt
                raise UserInputError(
                    f"the cached base model is damaged ({error}); delete the folder {directory} "
                    "and it is built again"
                ) from None
            loaded.model.eval()
            return BaseModel(loaded=loaded, path=weights, report=report, built=False)
        log.info("pretraining the embedded base CLIP (cached afterwards in %s)", directory)
        with torch.random.fork_rng():
            # Seed the initialisation without disturbing the caller's global RNG stream.
            torch.manual_seed(settings.seed)
            loaded = create_architecture(settings.arch)
        # The images are read only when training; a cache hit needs just the spec's key.
        captions = world_captions(forest, heldout)
        timing = pretrain(loaded, captions, load_embedded(world).split("train"), settings)
        classifier = ZeroShotClassifier(loaded, forest)
        report = {
            "model": settings.arch,
            "settings": asdict(settings),
            "dataset": dataset_key,
            "world": world.key(),
            "pretraining": timing,
        }
        fine_tuning = load_embedded(spec)
        for split in ("val", "test"):
            report[split] = base_report(classifier, fine_tuning.split(split), split, report_samples)
        _save(loaded.model, directory, report)
        loaded.pretrained = str(weights)
        return BaseModel(loaded=loaded, path=weights, report=report, built=True)


def base_report(classifier, data, split: str, samples: int | None = None) -> dict:
    """What the bars read, on one split: the fine-tuning dataset and the zero-shot suite."""
    from trainables.suites import evaluate_suite, get_suite

    data = data.subset(samples or 1000)
    suite = get_suite(BASE_SUITE)
    return {
        **zero_shot_report(classifier, data.images, data.labels, attack=BASE_ATTACK),
        "zeroshot": evaluate_suite(
            classifier,
            suite,
            split=split,
            samples=samples,
            eps=(suite.headline_eps,),
            profile=False,
        ),
    }
