"""`raysearch trees` with a model: trees built from its class embeddings (``trees build
embedding``, and the shipped ones of ``MODEL_BUILT``) and trees scored against it (``trees show
--score``)."""

from __future__ import annotations

import argparse
import json

from raysearch.commands.trees_output import check_output, written
from trainables.errors import must


def _templates(value: str, dataset: str) -> tuple[str, ...]:
    """``--templates``: a template set's name (as in suite files) or one template."""
    from trainables.suite_files import TEMPLATE_SETS, resolve_templates

    return resolve_templates(value if value in TEMPLATE_SETS else [value], dataset, "--templates")


def _level_sizes(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise must(
            "--level-sizes", "integers separated by commas (finest level first)", text
        ) from None


#: How each shipped tree of ``MODEL_BUILT`` is built: ``trees build embedding`` arguments.
SHIPPED_EMBEDDING_TREES: dict[str, dict] = {
    "embedded-text": {
        "dataset": "embedded",
        "model": "embedded",
        "depth": 2,
        "name": "text",
        "linkage": "ward",
        "templates": "a photo of a {}.",
    },
}


def embedding_trees(
    dataset: str,
    *,
    depth: int,
    root=None,
    model: str = "embedded",
    pretrained: str | None = None,
    linkage: str = "ward",
    templates: str = "a photo of a {}.",
    level_sizes: str | None = None,
    name: str | None = None,
    embeddings: str = "text",
    samples: int = 2000,
):
    """The trees of ``trees build embedding`` (one per linkage of the comma list ``linkage``),
    from the class names' text embeddings or the class means of ``samples`` training images'
    embeddings."""
    from trainables.class_embeddings import class_text_embeddings
    from trainables.clip_loader import load_clip
    from trainables.data.class_lists import DATASETS, dataset_classes, dataset_labels
    from trainables.hierarchy.embedding_trees import LINKAGES, embedding_tree, level_sizes_for

    if dataset not in DATASETS:
        raise must("--dataset", f"one of {', '.join(DATASETS)}", dataset)
    if embeddings not in ("text", "images"):
        raise must("--embeddings", "text or images", embeddings)
    if samples < 1:
        raise must("--samples", "an integer >= 1", samples)
    linkages = linkage.split(",")
    for one in linkages:
        if one not in LINKAGES:
            raise must("--linkage", f"one or more of {', '.join(LINKAGES)}", linkage)
    prompts = _templates(templates, dataset)
    sizes = _level_sizes(level_sizes)
    leaves = dataset_classes(dataset, root)
    names = dataset_labels(dataset, root)
    level_sizes_for(len(leaves), depth, sizes)  # before minutes of loading a model
    loaded = load_clip(model, pretrained)
    if embeddings == "text":
        vectors = class_text_embeddings(loaded, names, prompts)
    else:
        from trainables.class_embeddings import class_image_embeddings
        from trainables.data.registry import load_split

        data = load_split(
            dataset, "train", root=root, image_size=loaded.image_size, samples=samples
        )
        vectors = class_image_embeddings(loaded, data.images, data.labels, len(leaves))
    stem = name or f"{dataset}-{model.lower()}"
    return [
        embedding_tree(
            stem if len(linkages) == 1 and name else f"{stem}-{one}",
            leaves,
            vectors,
            depth=depth,
            linkage=one,
            level_sizes=sizes,
            labels=dict(zip(leaves, names, strict=True)),
        )
        for one in linkages
    ]


def run_build_embedding(args: argparse.Namespace) -> int:
    from trainables.hierarchy import Forest, save
    from trainables.hierarchy.embedding_trees import forest_disagreement

    output = check_output(args)
    trees = embedding_trees(
        args.dataset,
        depth=args.depth,
        root=args.root,
        model=args.model,
        pretrained=args.pretrained,
        linkage=args.linkage,
        templates=args.templates,
        level_sizes=args.level_sizes,
        name=args.name,
        embeddings=args.embeddings,
        samples=args.samples,
    )
    built = trees[0] if len(trees) == 1 else Forest(trees)
    written(save(built, output), built)
    for (first, second), share in forest_disagreement(Forest(trees)).items():
        print(f"  {first} vs {second}: {share:.1%} of leaf pairs meet at another level")
    return 0


def show_scores(obj, args: argparse.Namespace) -> int:
    from trainables.clip_loader import load_clip
    from trainables.tree_scores import score_trees

    if args.dataset is None:
        raise must("--dataset", "the dataset whose classes the tree is over (with --score)", None)
    if args.samples < 1:
        raise must("--samples", "an integer >= 1", args.samples)
    loaded = load_clip(args.model, args.pretrained)
    scores = score_trees(loaded, obj, args.dataset, root=args.root, samples=args.samples)
    if args.json:
        print(json.dumps(scores, indent=2))
        return 0
    for name, score in scores.items():
        levels = ", ".join(
            f"level {level} {accuracy:.3f} (chance {score['chance'][level]:.3f})"
            for level, accuracy in score["levels"].items()
        )
        print(f"tree `{name}` on {score['samples']} {args.dataset} val images: {levels}")
        print(
            f"  tree distance vs text-embedding distance (Spearman): "
            f"{score['distance_agreement']:.3f}"
        )
    return 0
