"""Shared fixtures: the embedded dataset, its forest and the cached base model, built once.

The base model and dataset live in the normal cache (``$RAYSEARCH_CACHE`` or
~/.cache/raysearch), so a second test session reuses them instead of pretraining again.

Tests that start Ray, run a search or need the pretrained base model are marked ``slow`` from
the fixtures they use; ``make test-fast`` (``pytest -m "not slow"``) leaves them out.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
import warnings

import pytest
import torch

#: Fixtures that make a test slow: a Ray instance, a whole search, or the pretrained base model
#: (minutes to build on an empty cache).
SLOW_FIXTURES = frozenset(
    {"ray_local", "searched", "searched_worker_group", "searched_either_path", "base_model"}
)


#: Below this much free space a full run (checkpoints, the cached base model, Ray's logs and
#: object spilling) can fill the disk, and a Ray job may then stall rather than fail.
LOW_DISK_BYTES = 5 * 2**30


def pytest_sessionstart(session: pytest.Session) -> None:
    """Print the free space the run will write into, so a run that stalls on a full disk says so."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    folder = tempfile.gettempdir()
    free = shutil.disk_usage(folder).free
    line = f"free disk space in {folder}: {free / 2**30:.1f} GiB"
    if free < LOW_DISK_BYTES:
        line += f" (under {LOW_DISK_BYTES / 2**30:.0f} GiB: Ray jobs may stall on a full disk)"
    reporter.write_line(line)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session", autouse=True)
def _two_threads():
    # The CI machine has two cores; more threads only add contention.
    torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def forest():
    from trainables.hierarchy.shipped import load_shipped

    return load_shipped("embedded")


@pytest.fixture(scope="session")
def embedded():
    from trainables.data.embedded import load_embedded

    return load_embedded()


@pytest.fixture(scope="session")
def base_model(embedded):
    from trainables.pretrain import load_or_pretrain_base

    return load_or_pretrain_base()


@pytest.fixture()
def tiny_clip():
    """A randomly initialised tiny CLIP (fast; for shape and mechanics tests)."""
    from trainables.backbone import EMBEDDED_ARCH, create_architecture

    with torch.random.fork_rng():
        torch.manual_seed(0)
        return create_architecture(EMBEDDED_ARCH)


@pytest.fixture(scope="session")
def suite_root(tmp_path_factory):
    """One folder with tiny copies of the 16 datasets of ``tecoa16`` (written once)."""
    from tests.suite_datasets import write_suite_root

    return write_suite_root(tmp_path_factory.mktemp("suite-data"))


@pytest.fixture(autouse=True)
def no_placement_group_outlives_its_test():
    """A Train job's placement group that outlives the job keeps its CPUs, and the next job
    that needs them waits forever: after a test, wait for Ray Train to remove them (up to
    30 s), then remove what is left, with a warning naming the test's leak."""
    yield
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return
    from ray.util import placement_group_table

    deadline = time.monotonic() + 30
    left = []
    while True:
        left = [pg for pg, info in placement_group_table().items() if info["state"] != "REMOVED"]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if left:
        from ray._raylet import PlacementGroupID
        from ray.util.placement_group import PlacementGroup, remove_placement_group

        for group in left:
            remove_placement_group(PlacementGroup(PlacementGroupID.from_hex(group)))
        warnings.warn(
            f"removed {len(left)} placement group(s) that outlived the test", stacklevel=1
        )


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray instance for every test that needs one (starting Ray takes seconds)."""
    import ray

    if not ray.is_initialized():
        from raysearch.runtime import start_local_ray

        # 8 driver slots for search trials (raysearch.runtime). Worker output would interleave
        # with what the CLI tests read from stderr.
        start_local_ray(2, 8, include_dashboard=True, log_to_driver=False)
    yield ray
    ray.shutdown()
