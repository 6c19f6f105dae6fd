"""A fine-tuned model as a folder of plain files, and the classifier built back from it.

A package holds everything needed to classify images at every level of every tree, and nothing
that needs unpickling:

- ``weights.safetensors``: the classifier's state (CLIP weights, cached text outputs, head);
- ``config.json``: the experiment config the model was trained with;
- ``trees.json``: the forest (every tree the model predicts);
- ``profile.json``: its evaluation report (when the job wrote one);
- ``model.json``: the architecture, prompt templates and lineage.

Packages are made from a training run's MLflow artifacts (:func:`package_from_run`) and read
back by :func:`load_classifier`, which the registered pyfunc model, ``raysearch predict`` and
``raysearch evaluate`` share.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

from raysearch import tracking
from trainables.cache import content_key
from trainables.checkpoints import PROFILE_FILE, STATE_FILE
from trainables.errors import UserInputError, must
from trainables.readers import load_safetensors, load_torch_file, read_json

WEIGHTS_FILE = "weights.safetensors"
CONFIG_FILE = "config.json"
TREES_FILE = "trees.json"
META_FILE = "model.json"
FORMAT = "raysearch-model/1"


def architecture_of(config) -> tuple[str, bool]:
    """The open_clip architecture behind ``config.model`` and whether it uses QuickGELU."""
    from trainables.backbone import EMBEDDED, EMBEDDED_ARCH, uses_quick_gelu

    name, pretrained = config.model.name, config.model.pretrained
    if name == EMBEDDED:
        return EMBEDDED_ARCH, False
    return name, uses_quick_gelu(name, pretrained)


def write_package(
    folder: Path,
    *,
    state: dict[str, torch.Tensor],
    config_dict: dict,
    trees_dict: dict,
    profile: dict | None,
    lineage: dict[str, str],
) -> Path:
    """Write a package into ``folder`` (created) and return it."""
    from safetensors.torch import save_file

    from raysearch.config import config_from_dict

    config = config_from_dict(config_dict)
    architecture, quick_gelu = architecture_of(config)
    folder.mkdir(parents=True, exist_ok=True)
    # safetensors refuses tensors that share memory; each gets its own copy.
    save_file(
        {k: v.detach().cpu().contiguous().clone() for k, v in state.items()},
        str(folder / WEIGHTS_FILE),
    )
    (folder / CONFIG_FILE).write_text(json.dumps(config_dict, indent=2))
    (folder / TREES_FILE).write_text(json.dumps(trees_dict, indent=2))
    if profile is not None:
        (folder / PROFILE_FILE).write_text(json.dumps(profile, indent=2))
    meta = {
        "format": FORMAT,
        "architecture": architecture,
        "quick_gelu": quick_gelu,
        "model": {"name": config.model.name, "pretrained": config.model.pretrained},
        "method": config.method.name,
        "templates": list(config.method.templates),
        "trees": [tree["name"] for tree in trees_dict["trees"]],
        "lineage": lineage,
    }
    (folder / META_FILE).write_text(json.dumps(meta, indent=2))
    return folder


def package_from_run(client, run_id: str, folder: Path, lineage: dict[str, str]) -> Path:
    """Build the package of a finished training run from its MLflow artifacts; the lineage
    gains ``raysearch.config_hash``, a stable hash of the run's experiment config.

    Refuses (one line) a run without a checkpoint or without its inputs.
    """

    with tempfile.TemporaryDirectory() as scratch:
        try:
            state_path = client.download_artifacts(run_id, f"checkpoint/{STATE_FILE}", scratch)
        except tracking.store_errors():
            raise must(
                "run", "a run with a checkpoint (artifact checkpoint/state.pt)", run_id
            ) from None
        try:
            inputs = Path(client.download_artifacts(run_id, "inputs", scratch))
        except tracking.store_errors():
            raise must("run", "a run with its inputs (artifacts inputs/)", run_id) from None
        profile = None
        try:
            profile_path = client.download_artifacts(run_id, f"evaluation/{PROFILE_FILE}", scratch)
            profile = json.loads(Path(profile_path).read_text())
        except (
            *tracking.store_errors(),
            ValueError,
        ):  # a job without the final profile still makes a model
            profile = None
        # Our own checkpoint, but read as untrusted: tensors and plain containers only.
        checkpoint = load_torch_file(Path(state_path))
        if not isinstance(checkpoint, dict) or "model" not in checkpoint:
            raise must("run", "a run whose checkpoint holds the model's weights", run_id)
        state = checkpoint["model"]
        config_dict = read_json(inputs / CONFIG_FILE)
        return write_package(
            folder,
            state=state,
            config_dict=config_dict,
            trees_dict=read_json(inputs / TREES_FILE),
            profile=profile,
            lineage={**lineage, "raysearch.config_hash": content_key(config_dict, length=16)},
        )


def locate_package(path: Path) -> Path:
    """The package inside ``path``: the folder itself, or a pyfunc model's ``artifacts/package``."""
    for candidate in (path, path / "artifacts" / "package"):
        if (candidate / META_FILE).is_file():
            return candidate
    raise must("--model", "a model package folder (with model.json) or a registered model", path)


def read_meta(folder: Path) -> dict:
    meta = read_json(folder / META_FILE)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        shown = meta.get("format") if isinstance(meta, dict) else f"<a JSON {type(meta).__name__}>"
        raise must("model.json format", FORMAT, shown)
    for key, kind in (("architecture", str), ("quick_gelu", bool)):
        if not isinstance(meta.get(key), kind):
            raise must(f"model.json {key}", f"a JSON {kind.__name__}", meta.get(key))
    return meta


def load_classifier(folder: Path, device: str | torch.device = "cpu"):
    """The fine-tuned classifier over every tree of the package's forest, in eval mode."""
    from raysearch.config import config_from_dict
    from trainables.backbone import create_architecture
    from trainables.hierarchy.tree_dicts import forest_from_dict
    from trainables.methods import training_forest
    from trainables.model import ZeroShotClassifier

    folder = locate_package(Path(folder))
    meta = read_meta(folder)
    config = config_from_dict(read_json(folder / CONFIG_FILE))
    forest = forest_from_dict(read_json(folder / TREES_FILE), where=str(folder / TREES_FILE))
    weights = folder / WEIGHTS_FILE
    state = load_safetensors(weights)  # every file is checked before the model is built
    # The weights come from the package; the architecture only gives their shapes.
    loaded = create_architecture(meta["architecture"], quick_gelu=meta["quick_gelu"])
    settings = config.method
    classifier = ZeroShotClassifier(
        loaded,
        training_forest(settings, forest),
        templates=settings.templates,
        head=settings.head,
    )
    try:
        classifier.load_state_dict(state)
    except RuntimeError as error:  # names or shapes of another model
        first = " ".join(str(error).split())[:200]
        raise UserInputError(f"{weights}: the weights do not fit the model ({first}).") from None
    classifier = classifier.with_forest(forest).to(device)
    return classifier.eval()


def fetch_package(model: str, tracking_uri: str, scratch: Path) -> Path:
    """The package of ``model``: ``models:/NAME@ALIAS`` (or ``models:/NAME/VERSION``), a
    training run id, or a local folder (a package, or a downloaded pyfunc model).

    The store is opened only for a registered model or a run id, and read-only: a missing or
    foreign SQLite file is refused rather than made into a store, and a tracking server that
    does not answer fails within seconds (:func:`raysearch.stores.open_store`).
    """
    import mlflow

    from raysearch import stores

    if model.startswith(("models:/", "runs:/")):
        stores.open_store(tracking_uri, read_only=True)
        previous = mlflow.get_tracking_uri()
        mlflow.set_tracking_uri(tracking_uri)
        try:
            folder = mlflow.artifacts.download_artifacts(artifact_uri=model, dst_path=str(scratch))
        except tracking.store_errors() as error:
            reason = " ".join(str(error).split())[:200]
            raise stores.store_failure(tracking_uri, error) or must(
                "--model", f"a registered model in {tracking_uri} ({reason})", model
            ) from None
        finally:
            mlflow.set_tracking_uri(previous)
        return locate_package(Path(folder))
    path = Path(model).expanduser()
    if path.exists():
        return locate_package(path)
    wanted = f"models:/NAME@ALIAS, a run id in {tracking_uri} or a model folder"
    if not tracking.RUN_ID.fullmatch(model):  # neither a folder nor a run id: no store opened
        raise must("--model", wanted, model)
    client = stores.open_store(tracking_uri, read_only=True)
    try:
        client.get_run(model)
    except tracking.store_errors() as error:
        failure = stores.store_failure(tracking_uri, error)
        raise failure or must("--model", wanted, model) from None
    return package_from_run(client, model, scratch / "package", {"raysearch.trial_run": model})
