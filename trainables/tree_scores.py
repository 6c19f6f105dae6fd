"""How well a model agrees with class trees: zero-shot accuracy at every level on a labelled
sample, and how its text embeddings' distances follow the tree (``raysearch trees show
--score``)."""

from __future__ import annotations

from collections.abc import Sequence

from trainables.hierarchy.tree import Forest, as_forest


def score_trees(
    loaded,
    trees,
    dataset: str,
    *,
    root=None,
    samples: int = 500,
    templates: Sequence[str] = ("a photo of a {}.",),
) -> dict[str, dict]:
    """Per tree of ``trees`` (a tree or forest over ``dataset``'s classes): ``levels``, the clean
    zero-shot accuracy of ``loaded`` at every level on the first ``samples`` images of the val
    split, with ``chance`` per level; ``distance_agreement`` of the class names' text embeddings
    with the tree (:func:`~trainables.hierarchy.embedding_trees.distance_agreement`)."""
    from trainables.class_embeddings import class_text_embeddings
    from trainables.data.class_lists import dataset_classes, dataset_labels
    from trainables.data.registry import load_split
    from trainables.errors import must
    from trainables.evaluate import level_accuracy
    from trainables.hierarchy.embedding_trees import distance_agreement
    from trainables.model import ZeroShotClassifier

    forest: Forest = as_forest(trees)
    classes = dataset_classes(dataset, root)
    if forest.leaves != classes:
        raise must("--dataset", "the dataset whose classes are the tree's leaves", dataset)
    data = load_split(dataset, "val", root=root, image_size=loaded.image_size, samples=samples)
    classifier = ZeroShotClassifier(loaded, forest, templates=templates).eval()
    accuracy = level_accuracy(classifier, data.images, data.labels)
    names = dataset_labels(dataset, root)
    embeddings = class_text_embeddings(loaded, names, templates)
    return {
        tree.name: {
            "levels": accuracy[tree.name],
            "chance": {level: 1 / size for level, size in enumerate(tree.level_sizes)},
            "distance_agreement": distance_agreement(tree, embeddings),
            "samples": int(len(data.labels)),
        }
        for tree in forest
    }
