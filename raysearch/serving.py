"""Predictions of a packaged model: the leaf class and the class at every level of every tree.

:class:`HierarchicalClassifierModel` is the MLflow pyfunc model that ``raysearch promote``
registers (``raysearch/pyfunc_entry.py`` hands it to MLflow as code, so loading it unpickles
nothing). ``mlflow.pyfunc.load_model("models:/NAME@ALIAS").predict(batch)`` takes:

- a pandas DataFrame with a column ``image`` whose cells are image file paths, encoded image
  bytes (PNG, JPEG, ...) or those bytes base64-encoded (what JSON clients of ``mlflow models
  serve`` send: ``{"dataframe_split": {"columns": ["image"], "data": [["iVBORw0..."]]}}``);
- a list of such cells;
- a numpy array of images: uint8 ``[N, H, W, 3]`` (0-255) or float ``[N, 3, H, W]`` in [0, 1].

Images are resized (shorter side) and centre-cropped to the model's input size; a damaged image,
or one of more than 8192 x 8192 pixels, is refused with one line naming it. The result is a
DataFrame with one row per image: ``leaf`` and ``leaf_probability``, then for every tree and
level ``<tree>/<level>`` (the class name) and ``<tree>/<level>/probability`` (softmax over that
level's classes).
"""

from __future__ import annotations

import base64
import binascii
import warnings
from pathlib import Path
from typing import Any

import torch

from trainables.errors import must
from trainables.readers import MAX_IMAGE_BYTES, is_file, open_image, read_bytes

IMAGE_COLUMN = "image"
_IMAGE_FORMS = "an image file path, image bytes or base64"


def _open_image(cell: Any):
    """The RGB image of one cell; a bad one raises one line naming the file (or its size)."""
    if isinstance(cell, bytes | bytearray):
        data, where = bytes(cell), f"{len(cell)} bytes"
    elif isinstance(cell, str | Path) and is_file(cell):
        data, where = read_bytes(Path(cell), max_bytes=MAX_IMAGE_BYTES), str(cell)
    elif isinstance(cell, str):
        try:
            data = base64.b64decode(cell, validate=True)
        except (binascii.Error, ValueError):
            raise must(IMAGE_COLUMN, _IMAGE_FORMS, cell[:60]) from None
        where = f"{len(data)} bytes decoded from base64"
    else:
        raise must(IMAGE_COLUMN, _IMAGE_FORMS, type(cell).__name__)
    return open_image(data, where, field=IMAGE_COLUMN)


def _resize_crop(image, size: int) -> torch.Tensor:
    """The evaluation transform every dataset uses, as float [3, size, size] in [0, 1]."""
    from trainables.data.image_files import transform_image

    return transform_image(image, size).float() / 255.0


def input_size(classifier) -> int:
    """The square image size the classifier's image encoder takes."""
    return classifier.image_size


def images_from_input(model_input: Any, size: int) -> torch.Tensor:
    """Float [N, 3, size, size] images in [0, 1] from any input format of the module docstring."""
    import numpy as np
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        if IMAGE_COLUMN not in model_input.columns:
            raise must("input", f"a DataFrame with a column `{IMAGE_COLUMN}`", list(model_input))
        model_input = list(model_input[IMAGE_COLUMN])
    if isinstance(model_input, np.ndarray) and model_input.dtype != object:
        array = torch.from_numpy(np.ascontiguousarray(model_input))
        if array.dim() == 4 and array.shape[-1] == 3:
            array = array.permute(0, 3, 1, 2)
        if array.dim() != 4 or array.shape[1] != 3:
            raise must("input", "images [N, H, W, 3] or [N, 3, H, W]", tuple(model_input.shape))
        array = array.float() / 255.0 if array.dtype == torch.uint8 else array.float()
        if array.shape[-1] != size or array.shape[-2] != size:
            array = torch.nn.functional.interpolate(
                array, size=(size, size), mode="bicubic", align_corners=False
            ).clamp(0, 1)
        return array
    cells = list(model_input) if not isinstance(model_input, str | bytes) else [model_input]
    if not cells:
        raise must("input", "at least one image", 0)
    return torch.stack([_resize_crop(_open_image(cell), size) for cell in cells])


@torch.no_grad()
def predict_levels(classifier, images: torch.Tensor, batch_size: int = 256) -> list[dict]:
    """Per image: ``{"leaf": (name, p), "levels": {tree: [(level, name, p), ...]}}``."""
    layout = classifier.layout
    device = classifier.pixel_mean.device
    predictions: list[dict] = []
    for start in range(0, len(images), batch_size):
        logits = classifier(images[start : start + batch_size].to(device)).float()
        per_level = {}
        for (tree, level), part in layout.slices.items():
            probabilities = logits[:, part].softmax(dim=-1)
            best, index = probabilities.max(dim=-1)
            per_level[(tree, level)] = (best.tolist(), (index + part.start).tolist())
        for row in range(len(logits)):
            entry: dict[str, Any] = {"levels": {}}
            for (tree, level), (best, index) in per_level.items():
                item = (level, layout.names[index[row]], float(best[row]))
                if level == 0 and "leaf" not in entry:
                    entry["leaf"] = item[1:]
                entry["levels"].setdefault(tree, []).append(item)
            predictions.append(entry)
    return predictions


def predictions_frame(predictions: list[dict]):
    """The DataFrame of the module docstring."""
    import pandas as pd

    rows = []
    for entry in predictions:
        row: dict[str, Any] = {"leaf": entry["leaf"][0], "leaf_probability": entry["leaf"][1]}
        for tree, levels in entry["levels"].items():
            for level, name, probability in levels:
                if level == 0:
                    continue
                row[f"{tree}/{level}"] = name
                row[f"{tree}/{level}/probability"] = probability
        rows.append(row)
    return pd.DataFrame(rows)


def _pyfunc_base():
    import mlflow.pyfunc

    # MLflow asks for type hints on predict to validate inputs; the inputs here come in
    # several formats (see the module docstring), checked by images_from_input instead. The
    # filter goes in after MLflow's import, which resets the warning filters.
    warnings.filterwarnings("ignore", message=r".*Add type hints to the `predict` method")
    return mlflow.pyfunc.PythonModel


class HierarchicalClassifierModel(_pyfunc_base()):
    """The registered model: a package folder (artifact ``package``) and the code above."""

    def load_context(self, context) -> None:
        from raysearch.model_package import load_classifier

        self.classifier = load_classifier(Path(context.artifacts["package"]))
        self.image_size = input_size(self.classifier)

    def predict(self, context, model_input, params=None):
        images = images_from_input(model_input, self.image_size)
        return predictions_frame(predict_levels(self.classifier, images))
