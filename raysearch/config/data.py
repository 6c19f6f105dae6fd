"""Checks of an experiment config that need its class trees: the forest of ``data.trees``, the
method's trees and depths, the weights file, the zero-shot suite's disjointness."""

from __future__ import annotations

from typing import TYPE_CHECKING

from raysearch.config.schema import DataSettings, ExperimentConfig, shown
from trainables.errors import must
from trainables.readers import expanded, is_file

if TYPE_CHECKING:
    from trainables.hierarchy.tree import Forest


def data_forest(data: DataSettings) -> Forest:
    """The forest of ``data.trees``, its leaves in the dataset's label order."""
    from trainables.data.class_lists import dataset_classes
    from trainables.hierarchy.shipped import SHIPPED, resolve
    from trainables.hierarchy.tree import Forest

    sources = (data.trees,) if isinstance(data.trees, str) else tuple(data.trees or ())
    trees = []
    for source in sources:
        shipped, _, tree = source.partition("/")
        known = source in SHIPPED or (shipped in SHIPPED and tree)
        if not known and not is_file(expanded(source)):
            raise must(
                "data.trees",
                f"shipped trees ({', '.join(SHIPPED)}), a shipped forest's tree such as "
                "embedded/form, or existing tree files",
                source,
            )
        loaded = resolve(source)
        trees.extend(loaded.trees if isinstance(loaded, Forest) else [loaded])
    forest = Forest(trees)
    classes = dataset_classes(data.dataset, data.root)
    if set(forest.leaves) != set(classes):
        raise must(
            "data.trees",
            f"trees whose leaves are the {len(classes)} classes of {data.dataset}",
            shown(data.trees),
        )
    return Forest(tree.with_leaf_order(classes) for tree in forest)


def validate_with_data(config: ExperimentConfig) -> Forest:
    """Load the class trees and check the method's trees and depths against them.

    Returns the whole forest of ``data.trees`` (leaves in the dataset's label order): the
    method selects its trees from it (:func:`trainables.methods.training_forest`, called by
    ``build_method``) and the evaluation scores every tree of it.
    """
    from trainables.backbone import pretrained_file
    from trainables.methods import training_forest
    from trainables.readers import check_weights_file

    forest = data_forest(config.data)
    method = config.method
    if method.trees is not None:
        if not method.trees:
            raise must("method.trees", "a non-empty list of tree names", [])
        for name in method.trees:
            if name not in forest:
                raise must("method.trees", f"names of trees in [{', '.join(forest.names)}]", name)
        for name, depth in zip(method.trees, method.depths or (), strict=False):
            top = forest[name].depth
            if not 1 <= depth <= top:
                raise must("method.depths", f"between 1 and {top} for tree `{name}`", depth)
    training_forest(method, forest)
    weights = pretrained_file(config.model.name, config.model.pretrained)
    if weights is not None:  # read now, without running any code in it, not in a Ray worker
        check_weights_file(weights, "model.pretrained")
    if config.data.zeroshot_suite is not None:
        from trainables.suites import check_disjoint, get_suite

        check_disjoint(get_suite(config.data.zeroshot_suite), forest)
    return forest
