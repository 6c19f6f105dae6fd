"""The Ray instance the commands run on: a local one started here, or a cluster by address.

A search trial whose job has one worker runs it in the trial's own process (no Ray Train worker
group) and holds that worker's CPUs and GPUs itself. Otherwise, trial drivers of a search (the
Tune function that launches a Ray Train job) hold the custom resource ``train_driver`` instead
of a CPU: a driver that held a CPU would leave a 2-core machine one CPU short for a 2-worker job,
and Train would wait for it forever. A local Ray gets as many driver slots as trials may run at
once; on a cluster, start the head node with ``--resources='{"train_driver": N}'`` (without it
a driver holds a small fraction of a CPU).

A local Ray listens on 127.0.0.1 only (every service: GCS, raylet, agents, workers, the
dashboard); a cluster is reached at the address the user gives (or the ``RAY_ADDRESS`` Ray
gives a Ray Job's entrypoint) and exposes what its own ``ray start`` flags expose. A cluster
whose nodes all run on this machine on 127.0.0.1 (a test cluster) is reached on loopback too.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import socket
from dataclasses import dataclass

from trainables.errors import UserInputError, must

log = logging.getLogger(__name__)

DRIVER_RESOURCE = "train_driver"
#: The CPU share a trial driver holds on a cluster without driver slots.
DRIVER_CPU_FRACTION = 0.01
#: Driver slots of a local Ray instance (more than any local search runs at once).
LOCAL_DRIVER_SLOTS = 64
LOOPBACK = "127.0.0.1"
#: The cluster Ray gives a Ray Job's entrypoint (and users may export): used without --address.
ADDRESS_VARIABLE = "RAY_ADDRESS"
#: Where Ray's State API looks for the dashboard before it searches the machine for a Ray.
API_SERVER_VARIABLE = "RAY_API_SERVER_ADDRESS"
#: Ray Train's controller checks on its workers every this many seconds (Ray's default: 2):
#: a job's start-up, every report and its end each wait for such a check.
TRAIN_POLL_VARIABLE = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
TRAIN_POLL_SECONDS = "0.25"
#: MLflow's settings for its HTTP clients (how long one waits out a tracking server that does
#: not answer, whether it prints run links): a trial's process inherits its node's environment,
#: not the launching shell's, so where they are set at launch they are passed on.
MLFLOW_VARIABLES = (
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT",  # and no run links among the trials' output
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER",
    "MLFLOW_HTTP_REQUEST_TIMEOUT",
)


def train_environment() -> dict[str, str]:
    """The environment Ray Train jobs get from raysearch (a value the user set wins). Set in
    this process (a job whose trainer starts here) and in the Ray job's runtime environment
    (a search trial's process creates its trainer)."""
    passed_on = {name: os.environ[name] for name in MLFLOW_VARIABLES if name in os.environ}
    return {
        TRAIN_POLL_VARIABLE: os.environ.get(TRAIN_POLL_VARIABLE, TRAIN_POLL_SECONDS),
        **passed_on,
    }


def ensure_ray(address: str | None, footprint: TrialFootprint, *, verbose: bool = True) -> None:
    """Connect to ``address``, or start a local Ray sized to this machine, and check that one
    job of ``footprint`` fits (Ray Train would otherwise wait for resources forever).

    A job bigger than this machine is refused before a local Ray starts, and so is one bigger
    than a Ray this process already drives. On a cluster given by ``address``, and inside a
    trial, a shortfall is only warned about: an autoscaling cluster grows when the job asks.
    ``verbose=False`` keeps the workers' output off this console (the commands print their own
    progress then).
    """
    import ray

    address = cluster_address(address)
    if ray.is_initialized():
        inside_ray = ray.get_runtime_context().get_actor_id() is not None  # a trial's driver
        if not inside_ray and not address:
            _check_fits(footprint, ray.cluster_resources(), "the running Ray")
        return
    quiet = {} if verbose else {"log_to_driver": False, "logging_level": logging.WARNING}
    if address:
        if is_loopback(address_host(address)):
            # Ray would take this machine's network address for its own and look for the
            # cluster there; a cluster on 127.0.0.1 is only reached from loopback.
            from raysearch.private_api import turn_off_multi_node

            turn_off_multi_node()
        os.environ.update(train_environment())
        ray.init(address=address, runtime_env={"env_vars": train_environment()}, **quiet)
        try:
            _check_fits(footprint, ray.cluster_resources(), "the Ray cluster")
        except UserInputError as shortfall:
            log.warning("%s Waiting for the cluster to scale up.", shortfall)
        return
    available = os.cpu_count() or 1
    _check_fits(footprint, {"CPU": available, "GPU": _local_gpus()}, "this machine")
    start_local_ray(available, LOCAL_DRIVER_SLOTS, **quiet)


def cluster_address(address: str | None) -> str | None:
    """The Ray cluster to join: ``address``, else ``$RAY_ADDRESS`` (what ``ray job submit``
    gives the entrypoint), else None: a local Ray."""
    return address or os.environ.get(ADDRESS_VARIABLE) or None


def address_host(address: str) -> str:
    """The host of a Ray address: ``HOST:PORT``, ``ray://HOST:PORT``, ``[IPV6]:PORT``, or the
    address itself when it has no port (``auto``)."""
    rest = address.split("://", 1)[-1]
    if rest.startswith("["):
        return rest[1:].partition("]")[0]
    host, separator, _ = rest.rpartition(":")
    return host if separator else rest


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def _local_gpus() -> int:
    import torch

    return torch.cuda.device_count()


def _check_fits(footprint: TrialFootprint, resources: dict[str, float], where: str) -> None:
    if footprint.worker_cpus > resources.get("CPU", 0) + 1e-9:
        raise must(
            "scaling.workers",
            f"small enough for {where}'s {resources.get('CPU', 0):g} CPUs (workers x "
            "cpus_per_worker)",
            footprint.worker_cpus,
        )
    if footprint.worker_gpus > resources.get("GPU", 0) + 1e-9:
        raise must(
            "scaling.gpus_per_worker",
            f"0, or small enough for {where}'s {resources.get('GPU', 0):g} GPUs (workers x "
            "gpus_per_worker)",
            footprint.worker_gpus,
        )


def start_local_ray(num_cpus: int, driver_slots: int, **init_options) -> None:
    """Start a single-node Ray on this machine with every service bound to 127.0.0.1.

    Ray replaces a loopback node address with the machine's own IP, and its services then listen
    on every interface, unless its multi-node mode is off. That mode is read from the environment
    when ``ray`` is imported, so it is set both for the processes Ray starts from here (they
    inherit the environment) and in the already imported module. Only for a local Ray: a node
    that joins a cluster must keep it on.
    """
    import ray

    from raysearch.private_api import turn_off_multi_node

    turn_off_multi_node()
    port = init_options.pop("dashboard_port", None) or free_port()
    # The dashboard stays on: Train's placement-group clean-up needs it, through the State API.
    # That API finds "the" Ray of this machine by looking for running ones, and fails where
    # there are several (another user's, another run's): the clean-up then never runs, the
    # job's placement group keeps its CPUs, and the next job waits for them forever. Naming
    # this Ray's dashboard to every process it starts (they inherit the environment) avoids it.
    environment = {**train_environment(), API_SERVER_VARIABLE: f"http://{LOOPBACK}:{port}"}
    os.environ.update(environment)
    context = ray.init(
        num_cpus=num_cpus,
        resources={DRIVER_RESOURCE: driver_slots},
        dashboard_host=LOOPBACK,
        dashboard_port=port,
        _node_ip_address=LOOPBACK,
        runtime_env={"env_vars": environment},
        **init_options,
    )
    if context.dashboard_url and context.dashboard_url != f"{LOOPBACK}:{port}":
        # Ray moved the dashboard (the port was taken meanwhile): point at where it is.
        os.environ[API_SERVER_VARIABLE] = f"http://{context.dashboard_url}"
        log.warning(
            "Ray's dashboard started on %s, not port %d: processes Ray started before this "
            "may not find it (placement groups may then outlive their jobs)",
            context.dashboard_url,
            port,
        )


def free_port() -> int:
    """A TCP port on the loopback interface that no process listens on now."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class TrialFootprint:
    """What one trial holds while it runs: its driver and its Train workers."""

    workers: int
    cpus_per_worker: float
    gpus_per_worker: float
    in_process: bool = False  # the trial runs its one worker itself (no Ray Train worker group)

    @property
    def worker_cpus(self) -> float:
        return self.workers * self.cpus_per_worker

    @property
    def worker_gpus(self) -> float:
        return self.workers * self.gpus_per_worker


def trial_resources(cluster: dict[str, float], footprint: TrialFootprint) -> dict[str, float]:
    """The resources a search trial holds itself, given ``ray.cluster_resources()``: its
    worker's when it runs the worker in its own process, else a driver's."""
    if footprint.in_process:
        resources = {"CPU": footprint.cpus_per_worker}
        if footprint.gpus_per_worker:
            resources["GPU"] = footprint.gpus_per_worker
        return resources
    return driver_resources(cluster, footprint)


def driver_resources(cluster: dict[str, float], footprint: TrialFootprint) -> dict[str, float]:
    """The resources of one trial driver, given ``ray.cluster_resources()``."""
    if cluster.get(DRIVER_RESOURCE, 0) >= 1:
        return {DRIVER_RESOURCE: 1}  # no CPU: a {"cpu": 0} request is refused
    spare = cluster.get("CPU", 0) - footprint.worker_cpus
    if spare < DRIVER_CPU_FRACTION:
        raise must(
            "scaling.workers",
            f"at most the cluster's CPUs minus a share for the trial driver (or start Ray with "
            f"--resources='{{\"{DRIVER_RESOURCE}\": 4}}'); the cluster has "
            f"{cluster.get('CPU', 0):g} CPUs and a trial's workers need",
            footprint.worker_cpus,
        )
    return {"cpu": DRIVER_CPU_FRACTION}


def trial_capacity(cluster: dict[str, float], footprint: TrialFootprint) -> int:
    """How many trials the cluster runs at once (by CPUs, GPUs and driver slots); at least 1."""
    slots = cluster.get(DRIVER_RESOURCE, 0) >= 1
    driver_cpu = 0.0 if slots or footprint.in_process else DRIVER_CPU_FRACTION
    limits = [_fits(cluster.get("CPU", 0), footprint.worker_cpus + driver_cpu)]
    if footprint.worker_gpus:
        limits.append(_fits(cluster.get("GPU", 0), footprint.worker_gpus))
    if slots and not footprint.in_process:
        limits.append(int(cluster[DRIVER_RESOURCE]))
    return max(1, min(limits))


def _fits(available: float, each: float) -> int:
    # 1.0 // 0.2 is 4.0 in binary floating point; Ray fits 5 shares of 0.2 in 1 GPU.
    return int(math.floor(available / each + 1e-9))
