"""`raysearch predict`: classify images at every level of every tree with a promoted model."""

from __future__ import annotations

import argparse
import json
import tempfile
import warnings
from pathlib import Path

from raysearch.commands.models import add_store_options, tracking_uri

#: What MLflow says, on defining any pyfunc model class whose ``predict`` has no type hints.
_TYPE_HINT_REQUEST = "Add type hints to the `predict` method"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="print the leaf class and the class at every level of every tree for images",
        description="Load a model (models:/NAME@ALIAS, a training run id or a model folder) and "
        "print, per image, its leaf class and its class at every level of every tree, with "
        "probabilities.",
    )
    parser.add_argument("--model", required=True, help="models:/NAME@ALIAS, a run id or a folder")
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files")
    parser.add_argument("--json", action="store_true", help="print the predictions as JSON")
    add_store_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from raysearch.model_package import fetch_package, load_classifier
    from trainables.errors import must
    from trainables.readers import is_file

    images_from_input, input_size, predict_levels = _serving()
    for image in args.images:
        if not is_file(image):
            raise must("IMAGE", "an existing image file", str(image))
    uri = tracking_uri(args)
    with tempfile.TemporaryDirectory() as scratch:
        classifier = load_classifier(fetch_package(args.model, uri, Path(scratch)))
    images = images_from_input([str(path) for path in args.images], input_size(classifier))
    predictions = predict_levels(classifier, images)
    if args.json:
        document = [
            {
                "image": str(path),
                "leaf": {"class": entry["leaf"][0], "probability": entry["leaf"][1]},
                "levels": {
                    tree: [
                        {"level": level, "class": name, "probability": probability}
                        for level, name, probability in levels
                    ]
                    for tree, levels in entry["levels"].items()
                },
            }
            for path, entry in zip(args.images, predictions, strict=True)
        ]
        print(json.dumps(document, indent=2))
        return 0
    for path, entry in zip(args.images, predictions, strict=True):
        name, probability = entry["leaf"]
        print(f"{path}: {name} ({probability:.3f})")
        for tree, levels in entry["levels"].items():
            chain = " > ".join(
                f"{name} ({probability:.2f})"
                for level, name, probability in sorted(levels, reverse=True)
                if level > 0
            )
            if chain:
                print(f"  {tree}: {chain}")
    return 0


def _serving():
    """The prediction helpers of :mod:`raysearch.serving`, imported without MLflow's request for
    type hints on the pyfunc model's ``predict`` (its inputs come in several formats, checked by
    ``images_from_input``; this command does not use the pyfunc model at all).

    MLflow raises that warning under a ``once`` filter of its own, which outranks any ignore
    filter, so it is caught while the module is imported; any other warning is shown as usual.
    MLflow is imported first: the filters its import adds outlive the catch.
    """
    import mlflow.pyfunc  # noqa: F401

    with warnings.catch_warnings(record=True) as caught:
        from raysearch.serving import images_from_input, input_size, predict_levels
    for warning in caught:
        if _TYPE_HINT_REQUEST not in str(warning.message):
            warnings.showwarning(
                warning.message, warning.category, warning.filename, warning.lineno
            )
    return images_from_input, input_size, predict_levels
