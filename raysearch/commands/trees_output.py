"""What every `raysearch trees build` writes and prints: the output file's check and the one-line
summary of a tree or forest."""

from __future__ import annotations

import argparse
from pathlib import Path

from trainables.errors import must
from trainables.outputs import check_output_file


def summary(obj) -> str:
    """One line: name, leaves, depth and level sizes of a tree, or of each tree of a forest."""
    from trainables.hierarchy import ClassTree

    def sizes(tree) -> str:
        return "/".join(map(str, tree.level_sizes))

    if isinstance(obj, ClassTree):
        return (
            f"tree `{obj.name}`: {len(obj.leaves)} leaves, depth {obj.depth}, "
            f"level sizes {sizes(obj)}"
        )
    trees = ", ".join(f"{tree.name} (depth {tree.depth}, {sizes(tree)})" for tree in obj.trees)
    return f"forest of {len(obj.trees)} trees over {len(obj.leaves)} leaves: {trees}"


def written(path: Path, obj) -> None:
    print(f"wrote {path}: {summary(obj)}")


def check_output(args: argparse.Namespace) -> Path:
    path = Path(args.output)
    if path.suffix.lower() not in (".json", ".parquet"):
        raise must("--output", "a .json or .parquet file", args.output)
    return check_output_file(path, "--output", replace=args.force)
