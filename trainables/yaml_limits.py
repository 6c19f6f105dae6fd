"""Bounds on untrusted YAML, checked on the composed node graph before any object is built."""

from __future__ import annotations

import yaml

#: The most nodes a document may expand to once its aliases are resolved. A real config or tree
#: has at most thousands; a "billion laughs" file (aliases of aliases) expands to billions from
#: a few lines, and building it would take minutes and gigabytes.
MAX_YAML_NODES = 100_000


class YamlTooLarge(ValueError):
    """A document whose aliases expand past :data:`MAX_YAML_NODES` nodes."""


def expanded_size(node: yaml.Node, sizes: dict[int, int] | None = None) -> int:
    """Nodes in ``node`` with every alias expanded, capped just above :data:`MAX_YAML_NODES`.

    Aliases share node objects, so sizes are memoised by identity and a bomb costs milliseconds.
    Raises RecursionError for documents nested deeper than Python's recursion limit.
    """
    sizes = {} if sizes is None else sizes
    known = sizes.get(id(node))
    if known is not None:
        return known
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(expanded_size(child, sizes) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size += sum(expanded_size(k, sizes) + expanded_size(v, sizes) for k, v in node.value)
    size = min(size, MAX_YAML_NODES + 1)
    sizes[id(node)] = size
    return size


def load_bounded(text: str, loader_class: type[yaml.SafeLoader]):
    """Parse one document with ``loader_class`` (a SafeLoader); :class:`YamlTooLarge` when it
    would expand past :data:`MAX_YAML_NODES` nodes, RecursionError when it nests too deep."""
    loader = loader_class(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if expanded_size(node) > MAX_YAML_NODES:
            raise YamlTooLarge(f"its aliases expand past {MAX_YAML_NODES:,} nodes")
        return loader.construct_document(node)
    finally:
        loader.dispose()
