"""Classes and class trees of the embedded dataset.

Twenty shapes, organised by three different trees over the same leaves (the multi-tree setting of
the method): by visual form (depth 3), by symmetry (depth 2) and by corners (depth 2). Every node
name is a short English noun phrase, so that captions and prompts such as "a photo of a polygon."
read naturally and a small text encoder can learn them.

This module is plain data; the renderer (:mod:`trainables.data.embedded`) draws the leaves, and
the hierarchy package builds :class:`~trainables.hierarchy.ClassTree` objects from the tables.
"""

from __future__ import annotations

#: Leaf classes in label order (label i is ``LEAVES[i]``).
LEAVES: tuple[str, ...] = (
    "circle",
    "ellipse",
    "ring",
    "semicircle",
    "crescent",
    "heart",
    "teardrop",
    "triangle",
    "square",
    "rectangle",
    "diamond",
    "trapezoid",
    "parallelogram",
    "pentagon",
    "hexagon",
    "star",
    "cross",
    "arrow",
    "chevron",
    "hourglass",
)

_FORM_FAMILIES = {
    "oval": ("circle", "ellipse", "ring"),
    "arc": ("semicircle", "crescent"),
    "lobe": ("heart", "teardrop"),
    "trigon": ("triangle", "hourglass"),
    "quadrilateral": ("square", "rectangle", "diamond", "trapezoid", "parallelogram"),
    "polygon": ("pentagon", "hexagon"),
    "pointer": ("arrow", "chevron"),
    "emblem": ("star", "cross"),
}
_FORM_KINDS = {
    "curved shape": ("oval", "arc", "lobe"),
    "angular shape": ("trigon", "quadrilateral", "polygon"),
    "sign": ("pointer", "emblem"),
}
_FORM_TOP = {
    "plain figure": ("curved shape", "angular shape"),
    "glyph": ("sign",),
}

_SYMMETRY_GROUPS = {
    "round symmetric shape": ("circle", "ring"),
    "many-fold symmetric shape": ("triangle", "square", "pentagon", "hexagon", "star", "cross"),
    "two-fold symmetric shape": ("ellipse", "rectangle", "diamond", "parallelogram", "hourglass"),
    "mirror symmetric shape": (
        "semicircle",
        "crescent",
        "heart",
        "teardrop",
        "trapezoid",
        "arrow",
        "chevron",
    ),
}
_SYMMETRY_TOP = {
    "highly symmetric shape": ("round symmetric shape", "many-fold symmetric shape"),
    "weakly symmetric shape": ("two-fold symmetric shape", "mirror symmetric shape"),
}

_CORNER_GROUPS = {
    "cornerless shape": ("circle", "ellipse", "ring"),
    "few-cornered shape": ("semicircle", "crescent", "heart", "teardrop"),
    "low-cornered shape": (
        "triangle",
        "square",
        "rectangle",
        "diamond",
        "trapezoid",
        "parallelogram",
    ),
    "many-cornered shape": (
        "pentagon",
        "hexagon",
        "star",
        "cross",
        "arrow",
        "chevron",
        "hourglass",
    ),
}
_CORNER_TOP = {
    "smooth shape": ("cornerless shape", "few-cornered shape"),
    "pointy shape": ("low-cornered shape", "many-cornered shape"),
}


def _parent_table(*groupings: dict[str, tuple[str, ...]]) -> dict[str, str]:
    """Flatten ``{parent: children}`` groupings into one ``{child: parent}`` table."""
    table: dict[str, str] = {}
    for grouping in groupings:
        for parent, children in grouping.items():
            for child in children:
                table[child] = parent
    return table


#: The embedded trees as ``{child: parent}`` tables, keyed by tree name.
TREES: dict[str, dict[str, str]] = {
    "form": _parent_table(_FORM_FAMILIES, _FORM_KINDS, _FORM_TOP),
    "symmetry": _parent_table(_SYMMETRY_GROUPS, _SYMMETRY_TOP),
    "corners": _parent_table(_CORNER_GROUPS, _CORNER_TOP),
}
