"""The smoke-sized search the search, inspect and registry tests share (run once per session,
through the ``searched`` fixture of tests/raysearch/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import optuna
import yaml

from raysearch import tracking
from raysearch.search import launch
from raysearch.search_state import optuna_storage_url, searches_folder
from raysearch.spaces import load_space

SPACES = Path(__file__).resolve().parents[2] / "search_spaces"
SMALL_EPS, LARGE_EPS = 0.0001, 0.2

TINY = [
    "data.train_size=512",
    "data.eval_samples=64",
    "data.zeroshot_samples=24",
    "optim.batch_size=64",
    "optim.epochs=2",
    "optim.warmup_steps=2",
    "evaluation.steps=2",
    "attack.steps=1",
]


def space_file(
    tmp_path: Path, name: str, space: dict, budget: dict, stores=True, overrides=()
) -> Path:
    """A space file in ``tmp_path``; ``stores=False`` leaves the MLflow store and checkpoints
    at their defaults, relative to the working directory; ``overrides`` follow the tiny ones."""
    where = [
        f"checkpoint.storage_path={tmp_path / 'ray_results'}",
        f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
    ]
    data = {
        "name": name,
        "base": str(SPACES / "embedded-experiment.yaml"),
        "overrides": [*TINY, *(where if stores else []), *overrides],
        "objective": {"metric": "robust_leaf", "mode": "max"},
        "budget": budget,
        "space": space,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# The three trials' values are constructed, not drawn: they are enqueued in the search's study
# before it starts, so Optuna hands them out in this order whatever its sampler and version.
# The evaluation eps is large, small, large: the third trial reaches ASHA's first rung (epoch 1)
# behind the second one by a wide margin, which prunes it. The robust accuracy of a trial
# evaluated at eps 0.2 is ~0, at 0.0001 it is its clean accuracy.
PRUNING_SPACE = {
    "trees": {"type": "subset", "of": ["form", "symmetry"], "min": 1, "max": 2},
    "depth": {"type": "int", "low": 1, "high": 2},
    "evaluation.eps": {"type": "categorical", "choices": [SMALL_EPS, LARGE_EPS]},
    "optim.lr": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True},
}
PRUNING_TRIALS = [
    {"trees": "form", "depth.form": 2, "evaluation.eps": LARGE_EPS, "optim.lr": 5e-4},
    {
        "trees": "form+symmetry",
        "depth.form": 1,
        "depth.symmetry": 2,
        "evaluation.eps": SMALL_EPS,
        "optim.lr": 3e-4,
    },
    {"trees": "symmetry", "depth.symmetry": 1, "evaluation.eps": LARGE_EPS, "optim.lr": 2e-4},
]
PRUNING_BUDGET = {
    "trials": 3,
    "concurrency": 1,
    "scheduler": "asha",
    "grace_epochs": 1,
    "reduction_factor": 3,
    "seed": 4,
}


def enqueue(space, search: str, trials: list[dict]) -> None:
    """Create the study of the search ``search`` with ``trials`` waiting in it, in order."""
    study = optuna.create_study(
        study_name=search,
        storage=optuna_storage_url(
            space.base.mlflow.resolved_tracking_uri(), searches_folder(space)
        ),
        direction="maximize",
    )
    for params in trials:
        study.enqueue_trial(params)


#: The two ways a one-worker trial runs: in the trial's own process (the default), or on a Ray
#: Train worker group.
TRIAL_PATHS = {"in_process": [], "worker_group": ["scaling.in_process=false"]}


def run_pruning_search(tmp_path: Path, trial_path: str = "in_process") -> dict:
    """One search of three trials (see PRUNING_TRIALS), shared by the tests of a session."""
    overrides = TRIAL_PATHS[trial_path]
    path = space_file(tmp_path, "pruning", PRUNING_SPACE, PRUNING_BUDGET, overrides=overrides)
    space = load_space(path)
    enqueue(space, "pruning", PRUNING_TRIALS)
    lines: list[str] = []
    result = launch(space, space_file=path, name="pruning", out=lines.append)
    client = tracking.client(result.tracking_uri)
    experiment = client.get_experiment_by_name("raysearch").experiment_id
    runs = client.search_runs([experiment])
    study = optuna.load_study(study_name=result.study_name, storage=result.optuna_url)
    return {"result": result, "lines": lines, "client": client, "runs": runs, "study": study}
