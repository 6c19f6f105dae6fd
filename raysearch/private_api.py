"""Every access to a private attribute of Ray, Ray Tune's ``OptunaSearch`` and Optuna.

None of these names is promised by its library. They live here and nowhere else, the versions
they were checked against are bounded in pyproject.toml, and tests/raysearch/test_private_api.py
exercises each one on real objects, so an upgrade that moves one fails with the attribute's
name instead of somewhere deep in a search.
"""

from __future__ import annotations

from typing import Any


class PrivateApiChanged(RuntimeError):
    """An installed Ray or Optuna no longer has an attribute raysearch relies on."""


def _version(library: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(library)
    except PackageNotFoundError:
        return "unknown"


def attribute(owner: Any, name: str, *, library: str, where: str) -> Any:
    """``owner.name``, or :class:`PrivateApiChanged` naming ``where.name`` and the version."""
    try:
        return getattr(owner, name)
    except AttributeError:
        raise PrivateApiChanged(
            f"{where}.{name} does not exist in {library} {_version(library)}; raysearch was "
            f"checked against the versions bounded in its pyproject.toml"
        ) from None


# -- Ray Tune ----------------------------------------------------------------------------------


def result_grid_trials(grid) -> list:
    """The Tune trials of a ``ResultGrid``, with Tune's status (TERMINATED, ERROR, RUNNING ...)
    that the public ``Result`` objects do not carry."""
    analysis = attribute(grid, "_experiment_analysis", library="ray", where="ResultGrid")
    return list(analysis.trials)


def local_tuner_run_config(tuner):
    """The ``RunConfig`` a restored ``Tuner`` will run with, to be edited in place; None through
    Ray Client, where the Tuner lives on the cluster."""
    from ray.util.client import ray as client_ray

    if client_ray.is_connected():
        return None
    local = attribute(tuner, "_local_tuner", library="ray", where="Tuner")
    return local.get_run_config()


def searcher_trials(searcher) -> dict:
    """``OptunaSearch``'s Tune trial id -> Optuna ``Trial`` (mutable: adopting an orphan)."""
    return attribute(searcher, "_ot_trials", library="ray", where="OptunaSearch")


def searcher_study(searcher):
    """``OptunaSearch``'s Optuna ``Study``."""
    return attribute(searcher, "_ot_study", library="ray", where="OptunaSearch")


def searcher_completed(searcher) -> set:
    """``OptunaSearch``'s Tune trial ids already told to the study (mutable)."""
    return attribute(searcher, "_completed_trials", library="ray", where="OptunaSearch")


# -- Ray core ----------------------------------------------------------------------------------


def turn_off_multi_node() -> None:
    """Keep a local Ray on loopback: its multi-node mode is read from the environment when
    ``ray`` is imported, so set both the variable (for the processes Ray starts) and the
    already imported constant."""
    import os

    from ray._private import ray_constants

    variable = attribute(
        ray_constants, "ENABLE_RAY_CLUSTERS_ENV_VAR", library="ray", where="ray_constants"
    )
    attribute(ray_constants, "ENABLE_RAY_CLUSTER", library="ray", where="ray_constants")
    os.environ[variable] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False


# -- Optuna ------------------------------------------------------------------------------------


def optuna_trial_id(trial) -> int:
    """The storage id of an Optuna ``Trial`` or ``FrozenTrial`` (not its number)."""
    return attribute(trial, "_trial_id", library="optuna", where=type(trial).__name__)
