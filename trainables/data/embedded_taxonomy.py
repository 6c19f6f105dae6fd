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


# --------------------------------------------------------------------------------------------
# The wider world the base model is pretrained on (fine-tuning never sees these classes)
# --------------------------------------------------------------------------------------------

#: Shapes only the base model's pretraining sees; the held-out-shapes suite dataset tests them.
HELD_OUT_SHAPES: tuple[str, ...] = (
    "octagon",
    "kite",
    "trefoil",
    "frame",
    "arch",
    "x mark",
    "letter l",
    "letter t",
    "letter h",
    "zigzag",
    "lightning bolt",
    "spiral",
)
#: Every shape the renderer draws, in shape-id order: the fine-tuning leaves, then the held-out.
ALL_SHAPES: tuple[str, ...] = LEAVES + HELD_OUT_SHAPES

# Node names are disjoint from the fine-tuning trees': the held-out tree tests zero-shot transfer
# at every level, so no level may reuse a class fine-tuning trained on.
_STROKE_GROUPS = {
    "letter figure": ("letter l", "letter t", "letter h", "x mark"),
    "winding figure": ("zigzag", "lightning bolt", "spiral"),
    "outline figure": ("frame", "arch"),
    "solid figure": ("octagon", "kite", "trefoil"),
}
_STROKE_TOP = {
    "stroke figure": ("letter figure", "winding figure"),
    "block figure": ("outline figure", "solid figure"),
}

#: The held-out shapes' own tree, ``{child: parent}``, keyed by tree name.
HELD_OUT_TREES: dict[str, dict[str, str]] = {
    "strokes": _parent_table(_STROKE_GROUPS, _STROKE_TOP),
}

#: Named shape colours (RGB in [0, 1]); images without a named colour get a random one.
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.1, 0.1),
    "green": (0.1, 0.7, 0.15),
    "blue": (0.1, 0.2, 0.9),
    "yellow": (0.95, 0.9, 0.1),
    "purple": (0.55, 0.1, 0.75),
    "orange": (1.0, 0.55, 0.0),
    "white": (0.97, 0.97, 0.97),
    "black": (0.03, 0.03, 0.03),
}
#: Named sizes: the shape's outer radius as a fraction of the image side. "medium" and "large"
#: together cover the fine-tuning dataset's radius range (0.28-0.47), so its images stay true
#: to the size words the base model learnt.
SIZES: dict[str, tuple[float, float]] = {
    "small": (0.17, 0.24),
    "medium": (0.28, 0.37),
    "large": (0.40, 0.47),
}
#: Named background kinds; images without one get the fine-tuning dataset's textured gradient.
#: (Stripes were tried and dropped: the tiny base model confused them with dots, about half of
#: striped validation images in two pretraining runs.)
BACKGROUNDS: tuple[str, ...] = ("plain", "checkered", "dotted")
#: Per-image attributes every render records, in column order. Each is an index into its name
#: list (shape: :data:`ALL_SHAPES`; colour: :data:`COLOURS`; size: :data:`SIZES`; background:
#: :data:`BACKGROUNDS`), or :data:`UNNAMED` for a random colour, the spec's radius range, or the
#: textured gradient background.
ATTRIBUTES: tuple[str, ...] = ("shape", "colour", "size", "background")
UNNAMED = -1
