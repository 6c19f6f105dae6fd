"""Real multi-machine services on this machine, for the cluster tests: a Ray cluster of a head
and worker nodes (:mod:`tests.cluster_nodes`) and an ``mlflow server`` with a SQLite backend and
served artifacts, all bound to 127.0.0.1.

Each service runs in a session of its own, so stopping it is killing its process group, and
:func:`left_behind` finds any process of it that survived (never another process of this
machine).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from raysearch.runtime import API_SERVER_VARIABLE, free_port

REPOSITORY = Path(__file__).resolve().parents[1]
#: Variables a test process may hold from the shared local Ray or other tests, which would send
#: the cluster's processes to another Ray or another store.
_FOREIGN = ("RAY_ADDRESS", API_SERVER_VARIABLE, "MLFLOW_TRACKING_URI", "RAY_TMPDIR", "TMPDIR")


def clean_environment(**extra: str) -> dict[str, str]:
    """This process's environment without the variables that would point elsewhere, with this
    Python's ``bin`` first on PATH (Ray Jobs' entrypoints and MLflow's server find it there)."""
    environment = {
        key: value
        for key, value in os.environ.items()
        # MLflow's client settings too: raysearch's read-only commands, run in this process by
        # other tests, shorten its retries (raysearch.stores.READ_ONLY_HTTP_WAITS).
        if key not in _FOREIGN and not key.startswith("MLFLOW_")
    }
    environment.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment['PATH']}"
    environment["PYTHONUNBUFFERED"] = "1"
    return {**environment, **extra}


@dataclass(frozen=True)
class _Process:
    pid: int
    parent: int
    group: int
    name: str


def _live_processes() -> list[_Process]:
    """This machine's processes that are not zombies, read from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # it ended meanwhile
            continue
        name, _, rest = stat.partition(" (")[2].rpartition(")")
        fields = rest.split()
        if fields[0] != "Z":
            found.append(_Process(int(entry.name), int(fields[1]), int(fields[2]), name))
    return found


def left_behind(group: int) -> list[str]:
    """The live processes of process group ``group``, as ``pid name``."""
    return [f"{p.pid} {p.name}" for p in _live_processes() if p.group == group]


def descendants(pid: int) -> list[int]:
    """The live processes below ``pid`` in the process tree (children, their children, ...)."""
    children: dict[int, list[int]] = {}
    for process in _live_processes():
        children.setdefault(process.parent, []).append(process.pid)
    found, todo = [], list(children.get(pid, []))
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(children.get(child, []))
    return found


def _signal(pid: int, number: int) -> None:
    try:
        os.kill(pid, number)
    except ProcessLookupError:  # it ended meanwhile
        pass


def stop_group(process: subprocess.Popen, *, grace: float = 20.0) -> None:
    """SIGTERM the process's group, then SIGKILL whatever of it is left after ``grace`` s."""
    group = process.pid
    try:
        os.killpg(group, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + grace
    while left_behind(group) and time.monotonic() < deadline:
        time.sleep(0.2)
    if left_behind(group):
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 10
        while left_behind(group) and time.monotonic() < deadline:
            time.sleep(0.2)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def wait_for(
    predicate, seconds: float, what: str, log: Path | None = None, every: float = 0.25
) -> None:
    """Poll ``predicate`` every ``every`` s until it holds; after ``seconds``, fail with the
    tail of ``log``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(every)
    tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
    raise AssertionError(f"timed out after {seconds:.0f} s waiting for {what}\n{tail}")


# -- the Ray cluster ------------------------------------------------------------------------------


@dataclass
class RayCluster:
    """A running cluster (see :mod:`tests.cluster_nodes`)."""

    process: subprocess.Popen
    gcs: str
    dashboard: str
    nodes: list[dict]
    environment: dict[str, str]
    log: Path

    @property
    def dashboard_url(self) -> str:
        return f"http://{self.dashboard}"

    @property
    def worker_nodes(self) -> list[dict]:
        return [node for node in self.nodes if not node["head"]]

    def node(self, node_id: str) -> dict:
        return next(node for node in self.nodes if node["id"] == node_id)

    def freeze_node(self, node_id: str) -> list[int]:
        """Stop a worker node's raylet and every process it started, all at once (a machine
        that stalls or is cut off); returns their pids, for :meth:`thaw`."""
        raylet = self.node(node_id)["raylet_pid"]
        frozen = [raylet, *descendants(raylet)]
        for pid in frozen:
            _signal(pid, signal.SIGSTOP)
        return frozen

    def kill_node(self, node_id: str) -> None:
        """Kill a worker node as a dead machine is: its raylet and every process it started.
        Killing the raylet alone would leave its workers running on for a while."""
        for pid in self.freeze_node(node_id):  # frozen first: nothing starts another process
            _signal(pid, signal.SIGKILL)

    @staticmethod
    def thaw(pids: list[int]) -> None:
        """Let the processes of a frozen node run on."""
        for pid in pids:
            _signal(pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()  # the nodes shut down in order
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        stop_group(self.process)


def start_ray_cluster(
    folder: Path, *, workers: int = 2, worker_cpus: int = 1, environment: dict | None = None
) -> RayCluster:
    """A head (no CPUs, 8 ``train_driver`` slots, the dashboard) and ``workers`` worker nodes
    of ``worker_cpus`` CPUs each, with ``environment`` added to the nodes' (and so the trials')
    environment. Ray's files go to ``folder`` (kept short: Ray's sockets live there and a socket
    path has at most 107 characters)."""
    folder.mkdir(parents=True, exist_ok=True)
    dashboard_port = free_port()
    shared = clean_environment(
        RAY_TMPDIR=str(folder), **{API_SERVER_VARIABLE: f"http://127.0.0.1:{dashboard_port}"}
    )
    env = {
        **shared,
        # A killed node is noticed within seconds, not Ray's default half a minute.
        "RAY_health_check_period_ms": "1000",
        "RAY_health_check_failure_threshold": "3",
        **(environment or {}),
    }
    log = folder / "cluster.log"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.cluster_nodes",
            f"--workers={workers}",
            f"--worker-cpus={worker_cpus}",
            f"--dashboard-port={dashboard_port}",
            f"--agent-port={free_port()}",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        cwd=REPOSITORY,
        env=env,
        start_new_session=True,
        text=True,
    )
    line = process.stdout.readline()  # blocks until the nodes are up, or the script ended
    if not line:
        stop_group(process)
        raise AssertionError(f"the Ray cluster did not start:\n{log.read_text()[-3000:]}")
    started = json.loads(line)
    # The processes a test starts against the cluster (not the nodes' ``environment``): with
    # multi-node mode off (see cluster_nodes).
    driver_environment = {**shared, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    return RayCluster(
        process, started["gcs"], started["dashboard"], started["nodes"], driver_environment, log
    )


# -- the MLflow tracking server ------------------------------------------------------------------


@dataclass
class TrackingServer:
    """``mlflow server`` with a SQLite backend and the artifacts it serves, on 127.0.0.1."""

    folder: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> TrackingServer:
        """Start it (again, on the same port and store) and wait until it answers."""
        self.folder.mkdir(parents=True, exist_ok=True)
        log = self.folder / "server.log"
        command = [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{self.folder / 'mlflow.db'}",
            "--artifacts-destination",
            str(self.folder / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        self.process = subprocess.Popen(
            command,
            stdout=log.open("a"),
            stderr=subprocess.STDOUT,
            cwd=self.folder,
            env=clean_environment(),
            start_new_session=True,
        )
        wait_for(self.answers, 120, f"the MLflow server on port {self.port}", log)
        return self

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as reply:
                return reply.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        if self.process is not None:
            stop_group(self.process)


def listening_addresses(group: int) -> set[str]:
    """The local addresses the processes of group ``group`` listen on (TCP)."""
    import importlib

    importlib.import_module("ray")  # it puts the psutil it ships on the path
    psutil = importlib.import_module("psutil")

    addresses = set()
    for line in left_behind(group):
        try:
            connections = psutil.Process(int(line.split()[0])).net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        addresses |= {c.laddr.ip for c in connections if c.status == psutil.CONN_LISTEN}
    return addresses
