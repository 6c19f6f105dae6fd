"""Strict, bounded YAML: the one loader of raysearch's files and its checks on the node graph.

A document is checked while it is composed and again on its composed graph, before any object
is built: at most :data:`MAX_YAML_NODES` nodes once aliases are expanded, nested at most
:data:`~trainables.readers.files.MAX_DEPTH` levels, keys plain scalars, integers at most
:data:`MAX_NUMBER_CHARS` characters.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from trainables.readers.files import BOM, MAX_DEPTH, BadFile, read_text

#: The most nodes a YAML document may expand to once its aliases are resolved. A real config or
#: tree has at most thousands; a "billion laughs" file (aliases of aliases) expands to billions
#: from a few lines, and building it would take minutes and gigabytes.
MAX_YAML_NODES = 100_000
#: The longest YAML integer. Base-60 integers (``1:30:00``) are converted in quadratic time, so
#: one long enough stalls the parser for hours; no setting needs more than a few digits.
MAX_NUMBER_CHARS = 100


class RepeatedKey(Exception):
    """A key given twice in one YAML mapping (YAML requires keys to be unique; PyYAML keeps the
    last silently). ``first`` and ``second`` are the two values, ``line`` the second's line."""

    def __init__(self, key: Any, first: Any, second: Any, line: int) -> None:
        super().__init__(key)
        self.key, self.first, self.second, self.line = key, first, second, line


class StrictLoader(yaml.SafeLoader):
    """The one YAML loader of raysearch's files: ``yaml.SafeLoader`` that refuses a key repeated
    within one mapping (:class:`RepeatedKey`) and reads ``1e-3`` as a number."""


def _unique_mapping(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False):
    first_values: dict[Any, yaml.Node] = {}
    for key_node, value_node in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *anchor` keys may be overridden by the mapping's own keys
        key = loader.construct_object(key_node, deep=True)
        if key in first_values:
            first = loader.construct_object(first_values[key], deep=True)
            second = loader.construct_object(value_node, deep=True)
            raise RepeatedKey(key, first, second, key_node.start_mark.line + 1)
        first_values[key] = value_node
    loader.flatten_mapping(node)  # merged keys first, so the mapping's own keys win
    return {
        loader.construct_object(key_node, deep=True): loader.construct_object(value_node, deep=True)
        for key_node, value_node in node.value
    }


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)
# YAML 1.1 (PyYAML) needs a dot in a float; YAML 1.2 and every user also mean 1e-3 as a number.
StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


class YamlRefused(ValueError):
    """A YAML document refused before it is built.

    ``constraint`` completes "must be YAML ..." and ``detail`` says what the document does
    instead, so callers can phrase the one line in their own form.
    """

    def __init__(self, constraint: str, detail: str) -> None:
        super().__init__(f"the file must be YAML {constraint}, but {detail}")
        self.constraint, self.detail = constraint, detail


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [child for pair in node.value for child in pair]
    return []


def _check_node(node: yaml.Node) -> None:
    """Refuse a document's plain-scalar problems: a list or mapping as a key, a huge integer."""
    if isinstance(node, yaml.MappingNode):
        for key, _ in node.value:
            if isinstance(key, yaml.SequenceNode | yaml.MappingNode):
                kind = "list" if isinstance(key, yaml.SequenceNode) else "mapping"
                raise YamlRefused(
                    "with plain keys (strings, numbers, booleans or null)",
                    f"a {kind} is used as a key at line {_line(key)}",
                )
    elif node.tag == "tag:yaml.org,2002:int" and len(node.value) > MAX_NUMBER_CHARS:
        raise YamlRefused(
            f"with integers of at most {MAX_NUMBER_CHARS} characters",
            f"line {_line(node)} holds one of {len(node.value):,}",
        )


def _check_graph(root: yaml.Node) -> None:
    """Check the composed node graph against the bounds, without recursion.

    Aliases share node objects, so every node is visited once and sizes are memoised by
    identity: a bomb costs milliseconds. An alias inside its own anchor (``&a [*a]``) would
    expand without end and is refused.
    """
    sizes: dict[int, int] = {}
    depths: dict[int, int] = {}
    entered: set[int] = set()  # the nodes on the path from the root to the current one
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            entered.discard(key)
            children = _children(node)
            size = 1 + sum(sizes[id(child)] for child in children)
            sizes[key] = min(size, MAX_YAML_NODES + 1)
            nested = isinstance(node, yaml.CollectionNode)
            depths[key] = nested + max((depths[id(child)] for child in children), default=0)
            if size > MAX_YAML_NODES:
                raise YamlRefused(
                    f"that expands to at most {MAX_YAML_NODES:,} nodes",
                    "its aliases expand past that",
                )
            if depths[key] > MAX_DEPTH:
                raise YamlRefused(
                    f"nested at most {MAX_DEPTH} levels deep",
                    f"it nests deeper (from line {_line(node)})",
                )
            continue
        if key in sizes:
            continue
        if key in entered:
            raise YamlRefused(
                f"that expands to at most {MAX_YAML_NODES:,} nodes",
                f"an alias refers to its own anchor (line {_line(node)}) and expands without end",
            )
        _check_node(node)
        entered.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in sizes)


def _bound_composition(loader: yaml.SafeLoader) -> None:
    """Make ``loader`` refuse a document while composing it: past :data:`MAX_DEPTH` levels (the
    composer recurses once per level) or :data:`MAX_YAML_NODES` nodes as written, so that
    neither a deep nor a huge document is composed in full before it is refused."""
    compose_node = loader.compose_node
    nodes, depth = 0, 0

    def bounded(parent: yaml.Node | None, index: Any) -> yaml.Node:
        nonlocal nodes, depth
        nodes, depth = nodes + 1, depth + 1
        try:
            if depth > MAX_DEPTH + 1:  # the innermost node is a scalar, not a level
                line = loader.peek_event().start_mark.line + 1
                raise YamlRefused(
                    f"nested at most {MAX_DEPTH} levels deep", f"it nests deeper (line {line})"
                )
            if nodes > MAX_YAML_NODES:
                raise YamlRefused(
                    f"that expands to at most {MAX_YAML_NODES:,} nodes", "it holds more than that"
                )
            return compose_node(parent, index)
        finally:
            depth -= 1

    loader.compose_node = bounded  # the composer calls it through the instance


def load_yaml(text: str, loader_class: type[yaml.SafeLoader] = StrictLoader) -> Any:
    """Parse one YAML document with ``loader_class`` (a SafeLoader), checked before it is built.

    Raises :class:`YamlRefused` for a document past the module's bounds (too many nodes once
    expanded, nested too deep, a list or mapping as a key, a huge integer) and
    ``yaml.YAMLError`` for text that is not YAML or a value that cannot be built (such as the
    date 2020-13-45). Exceptions of the loader's own constructors pass through.
    """
    loader = loader_class(text.removeprefix(BOM))
    _bound_composition(loader)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_graph(node)
        try:
            return loader.construct_document(node)
        # PyYAML's constructors fail in these ways on scalars they cannot convert: a date such
        # as 2020-13-45, or an explicit tag on the wrong text (`!!bool 3`, `!!int ''`).
        except (ValueError, OverflowError) as error:
            raise yaml.YAMLError(f"a value cannot be built: {error}") from None
        except (KeyError, IndexError, AttributeError):
            raise yaml.YAMLError("a value cannot be built: its text does not fit its tag") from None
    finally:
        loader.dispose()


def yaml_reason(error: yaml.YAMLError) -> str:
    """A YAMLError as one short line (the parser's own marks name no file: the caller does)."""
    reason = " ".join(str(error).replace('in "<unicode string>", ', "").split())
    return reason if len(reason) <= 300 else reason[:297] + "..."


def read_yaml(path: Path, loader_class: type[yaml.SafeLoader] = StrictLoader) -> Any:
    """The YAML document of ``path`` (None for an empty one), bounded as :func:`load_yaml`.

    Exceptions of ``loader_class``'s own constructors (a repeated key, say) pass through.
    """
    text = read_text(path)
    try:
        return load_yaml(text, loader_class)
    except YamlRefused as refused:
        raise BadFile(f"{path}: {refused}.") from None
    except yaml.YAMLError as error:
        raise BadFile(f"{path}: not valid YAML ({yaml_reason(error)}).") from None
