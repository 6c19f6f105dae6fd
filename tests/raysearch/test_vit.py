"""The real-model path on CPU: ViT-B-32 (random weights saved to a local file) fine-tuned for one
step through Ray Train on an image folder at 224 pixels, and evaluated after training on a
zero-shot suite of two more image folders (a suite file)."""

from __future__ import annotations

import pytest

from raysearch import tracking
from raysearch.cli import main
from tests.image_datasets import write_image_folder

CLASSES = ("car", "cat", "dog")


@pytest.fixture(scope="module")
def vit_weights(tmp_path_factory):
    import open_clip
    from safetensors.torch import save_file

    model = open_clip.create_model("ViT-B-32")  # random initialisation: nothing downloaded
    path = tmp_path_factory.mktemp("weights") / "vit-b-32-random.safetensors"
    save_file({name: value.contiguous() for name, value in model.state_dict().items()}, path)
    return path


def test_vit_b_32_trains_one_step_on_an_image_folder_through_ray_train(
    tmp_path, ray_local, vit_weights, capsys
):
    root = write_image_folder(tmp_path / "images", train=4, test=2, classes=CLASSES)
    tree = tmp_path / "tree.yaml"
    tree.write_text("cat: animal\ndog: animal\ncar: vehicle\n")
    birds = write_image_folder(tmp_path / "birds", train=2, test=2, classes=("owl", "wren"))
    boats = write_image_folder(tmp_path / "boats", train=2, test=2, classes=("ferry", "yacht"))
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        f"eps: [0.00392156862745098]\nsteps: 1\ndatasets:\n"
        f"  - {{dataset: imagefolder, root: {birds}}}\n"
        f"  - {{dataset: imagefolder, root: {boats}}}\n"
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    overrides = [
        "method.name=hrz",
        "data.dataset=imagefolder",
        f"data.root={root}",
        f"data.trees={tree}",
        "data.eval_samples=4",
        f"data.zeroshot_suite={suite}",
        "data.loader_workers=1",
        "model.name=ViT-B-32",
        f"model.pretrained={vit_weights}",
        "optim.batch_size=2",
        "optim.max_steps=1",
        "optim.warmup_steps=0",
        "optim.lr=1e-5",
        "attack.steps=1",
        "evaluation.steps=1",
        "scaling.in_process=false",
        f"checkpoint.storage_path={tmp_path / 'ray_results'}",
        f"mlflow.tracking_uri={uri}",
    ]
    assert main(["train", *overrides]) == 0, capsys.readouterr().err
    client = tracking.client(uri)
    experiment = client.get_experiment_by_name("raysearch")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    assert metrics["step"] == 1 and metrics["epochs_completed"] == 1
    for name in ("clean_leaf", "robust_leaf", "test.clean_leaf"):  # MLflow keys use dots
        assert 0.0 <= metrics[name] <= 1.0
    assert run.data.params["model.name"] == "ViT-B-32"
    assert metrics["images_per_second"] > 0
    for name in ("zeroshot.birds.clean", "zeroshot.boats.robust", "test.zeroshot_clean"):
        assert 0.0 <= metrics[name] <= 1.0, sorted(metrics)
