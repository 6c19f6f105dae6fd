"""Class trees and forests: building, validating, levels and serialising.

* :class:`ClassTree` / :class:`Forest` (:mod:`.tree`): root-aligned levels, leaf-to-node maps,
  edges, cutting and selecting trees for a search;
* :func:`load` / :func:`save` (:mod:`.tables`): plain parent tables (YAML, JSON, CSV, Parquet) and
  saved trees and forests (JSON, Parquet);
* :func:`build_wordnet_tree` (:mod:`.wordnet`) and :func:`build_coarse_tree` (:mod:`.tree`):
  trees from WordNet hypernyms and from coarse labels;
* :func:`load_shipped` / :func:`resolve` (:mod:`.shipped`): the trees shipped with the tool.
"""

from __future__ import annotations

from trainables.hierarchy.shipped import (
    SHIPPED,
    build_shipped,
    list_shipped,
    load_shipped,
    resolve,
)
from trainables.hierarchy.tables import load, read_parent_table, save
from trainables.hierarchy.tree import ClassTree, Forest, as_forest, build_coarse_tree
from trainables.hierarchy.wordnet import build_wordnet_tree, load_wordnet

__all__ = [
    "SHIPPED",
    "ClassTree",
    "Forest",
    "as_forest",
    "build_coarse_tree",
    "build_shipped",
    "build_wordnet_tree",
    "list_shipped",
    "load",
    "load_shipped",
    "load_wordnet",
    "read_parent_table",
    "resolve",
    "save",
]
