"""Fixtures of the raysearch tests."""

from __future__ import annotations

import warnings

import pytest

#: The registered model the promote, predict and serving tests share.
MODEL = "smoke-model"


@pytest.fixture(scope="session")
def searched(tmp_path_factory, ray_local):
    """A finished three-trial search (two finished trials, one pruned), run once; its trials
    train in their own processes (the default for one worker)."""
    from tests.raysearch.search_fixtures import run_pruning_search

    return run_pruning_search(tmp_path_factory.mktemp("search"))


@pytest.fixture(scope="session")
def searched_worker_group(tmp_path_factory, ray_local):
    """The same search with each trial on a Ray Train worker group."""
    from tests.raysearch.search_fixtures import run_pruning_search

    return run_pruning_search(tmp_path_factory.mktemp("search-group"), "worker_group")


@pytest.fixture(params=["in_process", "worker_group"])
def searched_either_path(request):
    """The search above on each trial path: a test that uses it runs once for each."""
    name = "searched" if request.param == "in_process" else "searched_worker_group"
    return request.getfixturevalue(name)


@pytest.fixture(scope="module")
def promoted(searched):
    """The best trial of ``searched`` by robust leaf accuracy, promoted as :data:`MODEL` (the
    promote arguments without ``--name``); a second module finds the version already there."""
    from raysearch.cli import main

    argv = ["promote", "--search", searched["result"].name, "--metric", "robust_leaf"]
    store = ["--tracking-uri", searched["result"].tracking_uri]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main([*argv, "--name", MODEL, "--json", *store]) == 0
    return argv
