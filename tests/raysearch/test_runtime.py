"""What a trial driver holds and how many trials a cluster runs at once, from the resources
``ray.cluster_resources()`` reports; and that the local Ray listens on loopback only."""

from __future__ import annotations

import pytest

from raysearch.runtime import (
    DRIVER_CPU_FRACTION,
    DRIVER_RESOURCE,
    TrialFootprint,
    driver_resources,
    trial_capacity,
    trial_resources,
)
from trainables.errors import UserInputError


def _footprint(workers: int = 1, cpus: float = 1.0, gpus: float = 0.0) -> TrialFootprint:
    return TrialFootprint(workers=workers, cpus_per_worker=cpus, gpus_per_worker=gpus)


def test_footprint_multiplies_by_the_workers():
    footprint = _footprint(workers=3, cpus=1.5, gpus=0.5)
    assert footprint.worker_cpus == 4.5
    assert footprint.worker_gpus == 1.5


# -- driver_resources -----------------------------------------------------------------------


def test_driver_holds_a_driver_slot_when_the_cluster_has_them():
    cluster = {"CPU": 2.0, DRIVER_RESOURCE: 8.0}
    # Even when the workers take every CPU: the driver holds no CPU.
    assert driver_resources(cluster, _footprint(workers=2)) == {"train_driver": 1}


def test_driver_holds_a_small_cpu_share_without_driver_slots():
    resources = driver_resources({"CPU": 4.0}, _footprint(workers=2))
    assert resources == {"cpu": DRIVER_CPU_FRACTION}
    assert 0 < resources["cpu"] < 0.1


def test_less_than_one_driver_slot_counts_as_none():
    cluster = {"CPU": 4.0, DRIVER_RESOURCE: 0.5}
    assert driver_resources(cluster, _footprint(workers=2)) == {"cpu": DRIVER_CPU_FRACTION}


@pytest.mark.parametrize("cluster", [{"CPU": 2.0}, {"CPU": 1.0}, {}])
def test_workers_taking_every_cpu_without_driver_slots_are_refused(cluster):
    with pytest.raises(UserInputError) as caught:
        driver_resources(cluster, _footprint(workers=2))
    message = str(caught.value)
    assert message.startswith("`scaling.workers` must be")
    assert DRIVER_RESOURCE in message  # it says how to start Ray with driver slots
    assert message.endswith("but got 2.0.")
    assert "\n" not in message


# -- trial_capacity -------------------------------------------------------------------------


def test_capacity_by_cpus_with_driver_slots():
    cluster = {"CPU": 8.0, DRIVER_RESOURCE: 64.0}
    assert trial_capacity(cluster, _footprint(workers=2)) == 4
    assert trial_capacity(cluster, _footprint(workers=3)) == 2
    assert trial_capacity(cluster, _footprint(workers=1, cpus=0.5)) == 16


def test_capacity_by_cpus_counts_the_drivers_cpu_share_without_slots():
    # 4 trials of 2 CPUs fill 8 CPUs exactly; their drivers' shares leave room for 3.
    assert trial_capacity({"CPU": 8.0}, _footprint(workers=2)) == 3
    assert trial_capacity({"CPU": 8.05}, _footprint(workers=2)) == 4


def test_capacity_by_gpus():
    cluster = {"CPU": 64.0, "GPU": 4.0, DRIVER_RESOURCE: 64.0}
    assert trial_capacity(cluster, _footprint(workers=2, gpus=1.0)) == 2
    assert trial_capacity(cluster, _footprint(workers=1, gpus=0.5)) == 8
    assert trial_capacity(cluster, _footprint(workers=1, gpus=0.0)) == 64  # GPUs do not limit


def test_capacity_by_driver_slots():
    cluster = {"CPU": 64.0, DRIVER_RESOURCE: 3.0}
    assert trial_capacity(cluster, _footprint(workers=1)) == 3


def test_capacity_takes_the_tightest_limit():
    cluster = {"CPU": 12.0, "GPU": 8.0, DRIVER_RESOURCE: 5.0}
    assert trial_capacity(cluster, _footprint(workers=2, gpus=1.0)) == 4  # GPUs: 4, CPUs: 6
    assert trial_capacity(cluster, _footprint(workers=1, gpus=1.0)) == 5  # slots: 5
    assert trial_capacity(cluster, _footprint(workers=4, gpus=0.5)) == 3  # CPUs: 3


@pytest.mark.parametrize(
    ("cluster", "footprint"),
    [
        ({"CPU": 1.0, DRIVER_RESOURCE: 8.0}, _footprint(workers=4)),
        ({"CPU": 16.0, DRIVER_RESOURCE: 8.0}, _footprint(workers=1, gpus=1.0)),  # no GPU
        ({}, _footprint(workers=2)),
    ],
)
def test_capacity_is_at_least_one(cluster, footprint):
    assert trial_capacity(cluster, footprint) == 1


def test_capacity_with_fractional_gpus_counts_every_trial_that_fits():
    cluster = {"CPU": 64.0, "GPU": 1.0, DRIVER_RESOURCE: 64.0}
    assert trial_capacity(cluster, _footprint(workers=1, gpus=0.2)) == 5
    assert trial_capacity(cluster, _footprint(workers=1, gpus=0.1)) == 10


# -- the local Ray ---------------------------------------------------------------------------

LOOPBACK_ADDRESSES = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


def _listening_addresses() -> set[str]:
    """The local addresses the processes of this driver's Ray node listen on (TCP).

    Found through Ray (the node's own processes and their children), never by scanning the
    machine's other processes.
    """
    import psutil
    from ray._private import worker

    node = worker._global_node
    if node is None:
        return set()
    processes = [psutil.Process()]  # the driver serves its own workers too
    for infos in node.all_processes.values():
        for info in infos:
            try:
                process = psutil.Process(info.process.pid)
                processes += [process, *process.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
    addresses = set()
    for process in processes:
        try:
            connections = process.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        addresses |= {c.laddr.ip for c in connections if c.status == psutil.CONN_LISTEN}
    return addresses


def test_local_ray_listens_on_loopback_only(ray_local):
    @ray_local.remote
    def node_address() -> str:
        return ray_local.util.get_node_ip_address()

    # A task starts a worker process, whose servers are checked too.
    assert ray_local.get(node_address.remote()) == "127.0.0.1"
    addresses = _listening_addresses()
    assert "127.0.0.1" in addresses  # the check sees Ray's servers at all
    assert addresses <= LOOPBACK_ADDRESSES, addresses


def test_a_trial_that_trains_in_process_holds_its_workers_resources_not_a_driver():
    cluster = {"CPU": 2.0, "GPU": 1.0, DRIVER_RESOURCE: 64}
    in_process = TrialFootprint(1, 1.0, 0.5, in_process=True)
    assert trial_resources(cluster, in_process) == {"CPU": 1.0, "GPU": 0.5}
    assert trial_capacity(cluster, in_process) == 2  # 2 CPUs, two halves of the GPU
    cpu_only = TrialFootprint(1, 1.0, 0.0, in_process=True)
    assert trial_resources({"CPU": 3.0}, cpu_only) == {"CPU": 1.0}
    assert trial_capacity({"CPU": 3.0}, cpu_only) == 3  # no share kept for a driver
    # A trial on a worker group keeps its driver slot.
    group = TrialFootprint(1, 1.0, 0.0)
    assert trial_resources(cluster, group) == driver_resources(cluster, group)


@pytest.mark.parametrize(
    ("address", "host", "loopback"),
    [
        ("127.0.0.1:6379", "127.0.0.1", True),
        ("ray://127.0.0.1:10001", "127.0.0.1", True),
        ("[::1]:6379", "::1", True),
        ("localhost:6379", "localhost", True),
        ("10.0.0.5:6379", "10.0.0.5", False),
        ("head.internal:6379", "head.internal", False),
        ("auto", "auto", False),
    ],
)
def test_the_host_of_a_ray_address_and_whether_it_is_loopback(address, host, loopback):
    from raysearch.runtime import address_host, is_loopback

    assert address_host(address) == host
    assert is_loopback(address_host(address)) is loopback


def test_a_ray_job_entrypoint_joins_the_cluster_ray_names(monkeypatch):
    from raysearch.runtime import ADDRESS_VARIABLE, cluster_address

    monkeypatch.setenv(ADDRESS_VARIABLE, "127.0.0.1:6379")
    assert cluster_address(None) == "127.0.0.1:6379"
    assert cluster_address("10.0.0.5:6379") == "10.0.0.5:6379"  # --address wins
    monkeypatch.delenv(ADDRESS_VARIABLE)
    assert cluster_address(None) is None  # a local Ray


def test_mlflow_client_settings_set_at_launch_reach_the_trials(monkeypatch):
    from raysearch.runtime import train_environment

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_TIMEOUT", raising=False)
    environment = train_environment()
    assert environment["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "3"
    assert "MLFLOW_HTTP_REQUEST_TIMEOUT" not in environment
