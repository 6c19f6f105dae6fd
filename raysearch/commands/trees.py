"""`raysearch trees`: show, validate and build class trees.

* ``trees show NAME_OR_FILE [--json] [--tree T]``: an indented view from the top level down to
  the leaves (``--json``: ``{"name", "leaves", "depth", "levels"}`` with the display names of
  levels 1..depth; a list of those for a forest);
* ``trees validate FILE [--dataset NAME]``: a one-line summary, or the problem and exit code 2;
* ``trees build table|wordnet|coarse|embedding|shipped``: write a tree file (``.json`` or
  ``.parquet``); ``embedding`` clusters the class names' text embeddings of a model
  (:mod:`trainables.hierarchy.embedding_trees`), several linkages giving a forest whose trees'
  disagreement it prints.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from raysearch.commands.tree_models import (
    SHIPPED_EMBEDDING_TREES,
    embedding_trees,
    run_build_embedding,
    show_scores,
)
from raysearch.commands.trees_output import check_output, summary, written
from trainables.errors import UserInputError, must
from trainables.outputs import check_output_folder
from trainables.readers import is_file, read_text

#: Datasets with a WordNet tree recipe (leaves are WordNet names or ids).
WORDNET_DATASETS = ("cifar10", "cifar100", "imagenet1k")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "trees",
        help="show, validate and build class trees",
        description="Show, validate and build the class trees (hierarchies) used for training.",
    )
    actions = parser.add_subparsers(dest="trees_action", metavar="ACTION")
    actions.required = True

    show = actions.add_parser("show", help="print a tree or forest")
    show.add_argument("tree", metavar="NAME_OR_FILE", help="a shipped name, shipped/tree or a file")
    show.add_argument("--tree", dest="select", metavar="T", help="one tree of a forest")
    show.add_argument("--json", action="store_true", help="print the levels as JSON")
    show.add_argument(
        "--score",
        action="store_true",
        help="how well a model agrees with the tree on --dataset: accuracy at every level, and "
        "the rank correlation of tree distance with text-embedding distance",
    )
    show.add_argument("--dataset", metavar="D", help="with --score: the tree's dataset")
    show.add_argument("--root", metavar="DIR", help="with --score: where D's files are")
    show.add_argument("--model", default="embedded", help="with --score: open_clip name")
    show.add_argument("--pretrained", metavar="TAG|FILE", help="with --score: tag or weights")
    show.add_argument("--samples", type=int, default=500, help="with --score: val images")
    show.set_defaults(handler=run_show)

    validate = actions.add_parser("validate", help="check a tree file")
    validate.add_argument("file", metavar="FILE")
    validate.add_argument(
        "--dataset", metavar="NAME", help="its leaves must be this dataset's classes"
    )
    validate.set_defaults(handler=run_validate)

    build = actions.add_parser("build", help="build a tree file")
    sources = build.add_subparsers(dest="trees_source", metavar="SOURCE")
    sources.required = True

    table = sources.add_parser("table", help="from a parent table (YAML, JSON, CSV, Parquet)")
    table.add_argument("file", metavar="FILE")
    table.add_argument("--name", help="tree name (default: the file stem)")
    table.add_argument("--dataset", metavar="D", help="the leaves must be this dataset's classes")
    table.add_argument("--depth", type=int, metavar="L", help="levels kept above the leaves")
    table.add_argument("-o", "--output", required=True, metavar="OUT", help=".json or .parquet")
    table.add_argument("--force", action="store_true", help="replace OUT if it exists")
    table.set_defaults(handler=run_build_table)

    wordnet = sources.add_parser("wordnet", help="from WordNet hypernym paths")
    leaves = wordnet.add_mutually_exclusive_group(required=True)
    leaves.add_argument("--dataset", metavar="D", help=f"one of {', '.join(WORDNET_DATASETS)}")
    leaves.add_argument(
        "--ids",
        metavar="FILE",
        help="one WordNet id or name per line, optionally `LEAF = SYNSET`; # starts a comment",
    )
    wordnet.add_argument("--depth", type=int, metavar="L", help="levels kept above the leaves")
    wordnet.add_argument(
        "--balanced",
        action="store_true",
        help="levels as cuts of balanced sizes, not counted from the root (needs --depth or a "
        "shipped depth)",
    )
    wordnet.add_argument("--name", help="tree name")
    wordnet.add_argument("--wordnet-dir", metavar="DIR", help="a WordNet 3.0 database folder")
    wordnet.add_argument("-o", "--output", required=True, metavar="OUT", help=".json or .parquet")
    wordnet.add_argument("--force", action="store_true", help="replace OUT if it exists")
    wordnet.set_defaults(handler=run_build_wordnet)

    coarse = sources.add_parser("coarse", help="from a dataset's coarse labels (cifar100)")
    coarse.add_argument("--dataset", required=True, metavar="D")
    coarse.add_argument("-o", "--output", required=True, metavar="OUT", help=".json or .parquet")
    coarse.add_argument("--force", action="store_true", help="replace OUT if it exists")
    coarse.set_defaults(handler=run_build_coarse)

    embedding = sources.add_parser(
        "embedding", help="from clustering the class names' text embeddings of a model"
    )
    embedding.add_argument("--dataset", required=True, metavar="D", help="whose classes")
    embedding.add_argument("--root", metavar="DIR", help="where D's files are (read for classes)")
    embedding.add_argument(
        "--model", default="embedded", help="open_clip name, or embedded (the default base)"
    )
    embedding.add_argument("--pretrained", metavar="TAG|FILE", help="open_clip tag or weights")
    embedding.add_argument("--depth", type=int, required=True, metavar="L", help="levels")
    embedding.add_argument(
        "--linkage",
        default="ward",
        metavar="L[,L...]",
        help="ward, average or complete; several: a forest with one tree each",
    )
    embedding.add_argument(
        "--templates",
        default="a photo of a {}.",
        metavar="SET|TEXT",
        help="tecoa, clip_benchmark (the dataset's) or one template with {}",
    )
    embedding.add_argument(
        "--level-sizes", metavar="N,N", help="nodes per level, finest first (default geometric)"
    )
    embedding.add_argument(
        "--embeddings",
        default="text",
        help="text: the class names' prompts; images: each class's mean image embedding over "
        "--samples training images",
    )
    embedding.add_argument("--samples", type=int, default=2000, help="with --embeddings images")
    embedding.add_argument("--name", help="tree name (default: <dataset>-<model>-<linkage>)")
    embedding.add_argument("-o", "--output", required=True, metavar="OUT", help=".json or .parquet")
    embedding.add_argument("--force", action="store_true", help="replace OUT if it exists")
    embedding.set_defaults(handler=run_build_embedding)

    shipped = sources.add_parser("shipped", help="rebuild every shipped tree file")
    shipped.add_argument("--out-dir", metavar="DIR", help="default: the package's trees folder")
    shipped.add_argument("--wordnet-dir", metavar="DIR", help="a WordNet 3.0 database folder")
    shipped.add_argument(
        "--without-models",
        action="store_true",
        help="skip the trees clustered from a model's embeddings (they load the base model)",
    )
    shipped.set_defaults(handler=run_build_shipped)


# -- descriptions ------------------------------------------------------------------------------


def levels_json(tree) -> dict:
    return {
        "name": tree.name,
        "leaves": list(tree.leaves),
        "depth": tree.depth,
        "levels": [list(tree.level_names(level)) for level in range(1, tree.depth + 1)],
    }


def tree_lines(tree) -> list[str]:
    """An indented view of ``tree``: top nodes first, then their children down to the leaves.

    A node shows its display name, followed by its id in brackets when the two differ.
    """
    order = {
        node: i for level in range(tree.depth + 1) for i, node in enumerate(tree.level_nodes(level))
    }
    children: dict[str, list[str]] = {}
    for child, parent in tree.parents.items():
        if parent != tree.root:
            children.setdefault(parent, []).append(child)
    lines = [summary(tree)]

    def walk(node: str, indent: int) -> None:
        label = tree.labels[node]
        shown = label if label == node else f"{label} [{node}]"
        lines.append("  " * indent + shown)
        for child in sorted(children.get(node, []), key=order.__getitem__):
            walk(child, indent + 1)

    for top in tree.level_nodes(tree.depth):
        walk(top, 1)
    return lines


# -- handlers ----------------------------------------------------------------------------------


def run_show(args: argparse.Namespace) -> int:
    from trainables.hierarchy import ClassTree, resolve

    obj = resolve(args.tree)
    if args.select is not None:
        if isinstance(obj, ClassTree):
            if args.select != obj.name:
                raise must("--tree", f"`{obj.name}` (the only tree of {args.tree})", args.select)
        else:
            obj = obj[args.select]
    trees = [obj] if isinstance(obj, ClassTree) else list(obj.trees)
    if args.score:
        return show_scores(obj, args)
    if args.json:
        data = levels_json(obj) if isinstance(obj, ClassTree) else [levels_json(t) for t in trees]
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return 0
    print("\n\n".join("\n".join(tree_lines(tree)) for tree in trees))
    return 0


def _classes(dataset: str | None):
    if dataset is None:
        return None
    from trainables.data.class_lists import dataset_classes

    return dataset_classes(dataset)


def run_validate(args: argparse.Namespace) -> int:
    from trainables.hierarchy import load

    obj = load(args.file, leaves=_classes(args.dataset))
    print(f"OK {args.file}: {summary(obj)}")
    return 0


def _with_dataset_labels(tree, dataset: str):
    """The tree with the dataset's display names on leaves still labelled by their id."""
    from trainables.data.class_lists import dataset_classes, dataset_labels
    from trainables.hierarchy import ClassTree

    names = dict(zip(dataset_classes(dataset), dataset_labels(dataset), strict=True))
    labels = dict(tree.labels)
    for leaf in tree.leaves:
        if labels[leaf] == leaf:
            labels[leaf] = names[leaf]
    return ClassTree(tree.name, tree.leaves, tree.parents, labels, tree.depth)


def run_build_table(args: argparse.Namespace) -> int:
    from trainables.hierarchy import ClassTree, load, save

    output = check_output(args)
    tree = load(args.file, leaves=_classes(args.dataset), depth=args.depth, name=args.name)
    if not isinstance(tree, ClassTree):
        raise must("FILE", "a parent table or a single tree (not a forest)", args.file)
    if args.dataset is not None:
        tree = _with_dataset_labels(tree, args.dataset)
    written(save(tree, output), tree)
    return 0


def read_ids_file(path: str | Path) -> tuple[list[str], dict[str, str]]:
    """Leaves and overrides from a text file: ``LEAF`` or ``LEAF = SYNSET`` per line."""
    path = Path(path)
    if not is_file(path):
        raise must("--ids", "an existing file", str(path))
    text = read_text(path)
    leaves: list[str] = []
    overrides: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        leaf, equals, synset = (part.strip() for part in line.partition("="))
        if not leaf or (equals and not synset):
            raise UserInputError(
                f"{path}: line {number} must be `LEAF` or `LEAF = SYNSET`, but got {raw!r}."
            )
        leaves.append(leaf)
        if equals:
            overrides[leaf] = synset
    if not leaves:
        raise UserInputError(f"{path}: the file lists no classes.")
    return leaves, overrides


def run_build_wordnet(args: argparse.Namespace) -> int:
    from trainables.hierarchy import build_wordnet_tree, save
    from trainables.hierarchy.shipped import CIFAR100_SYNSETS, SHIPPED_DEPTHS

    output = check_output(args)
    labels = None
    if args.dataset is not None:
        if args.dataset not in WORDNET_DATASETS:
            raise must("--dataset", f"one of {', '.join(WORDNET_DATASETS)}", args.dataset)
        from trainables.data.class_lists import dataset_classes, dataset_labels

        leaves = list(dataset_classes(args.dataset))
        labels = dict(zip(leaves, dataset_labels(args.dataset), strict=True))
        overrides = CIFAR100_SYNSETS if args.dataset == "cifar100" else {}
        name = args.name or f"{args.dataset}-wordnet"
        depth = (
            args.depth
            if args.depth is not None
            else SHIPPED_DEPTHS[name]
            if name in SHIPPED_DEPTHS
            else None
        )
    else:
        leaves, overrides = read_ids_file(args.ids)
        name = args.name or Path(args.ids).stem
        depth = args.depth
    if args.balanced and depth is None:
        raise must("--depth", "a number of levels with --balanced", None)
    tree = build_wordnet_tree(
        name,
        leaves,
        depth=None if args.balanced else depth,
        synsets=overrides,
        labels=labels,
        wordnet_dir=args.wordnet_dir,
    )
    if args.balanced:
        from trainables.hierarchy.balanced import balanced_tree

        tree = balanced_tree(tree, depth, name=args.name or f"{name}-balanced")
    written(save(tree, output), tree)
    return 0


def run_build_coarse(args: argparse.Namespace) -> int:
    from trainables.data.class_lists import CIFAR100_CLASSES, CIFAR100_FINE_TO_COARSE
    from trainables.hierarchy import build_coarse_tree, save

    output = check_output(args)
    if args.dataset != "cifar100":
        raise must("--dataset", "cifar100 (the only dataset with coarse labels)", args.dataset)
    tree = build_coarse_tree("cifar100-coarse", CIFAR100_FINE_TO_COARSE, CIFAR100_CLASSES)
    written(save(tree, output), tree)
    return 0


def run_build_shipped(args: argparse.Namespace) -> int:
    from trainables.hierarchy import build_shipped, load, save
    from trainables.hierarchy.shipped import SHIPPED, TREES_DIR, load_shipped

    if args.out_dir is not None:
        check_output_folder(args.out_dir, "--out-dir")
    paths = build_shipped(args.out_dir, wordnet_dir=args.wordnet_dir)
    if not args.without_models:
        out = Path(args.out_dir) if args.out_dir is not None else TREES_DIR
        for shipped, settings in SHIPPED_EMBEDDING_TREES.items():
            (tree,) = embedding_trees(**settings)
            paths[shipped] = save(tree, out / SHIPPED[shipped])
        load_shipped.cache_clear()
    for path in paths.values():
        written(path, load(path))
    return 0
