"""Fixtures of the raysearch tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def searched(tmp_path_factory, ray_local):
    """A finished three-trial search (two finished trials, one pruned), run once."""
    from tests.raysearch.search_fixtures import run_pruning_search

    return run_pruning_search(tmp_path_factory.mktemp("search"))
