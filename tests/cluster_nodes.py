"""A multi-node Ray cluster on this machine, all on 127.0.0.1, for the cluster tests.

Run as ``python -m tests.cluster_nodes --workers 2 ...`` by :mod:`tests.cluster`: starts a head
node (its own CPUs, ``train_driver`` slots, the dashboard for Ray Jobs) and worker nodes, each
with its own raylet and CPUs (``ray.cluster_utils.Cluster``, the nodes ``ray start`` makes), then
prints one JSON line (the GCS and dashboard addresses, each node's id and raylet pid) and holds
the cluster until its standard input closes or it gets SIGTERM, when it stops every node.

Ray's multi-node mode is off (its variable is set before ``ray`` is imported, and inherited by
every process the nodes start): the nodes then keep 127.0.0.1 as their address instead of
taking the machine's network address, so every service listens on loopback only.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--head-cpus", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--worker-cpus", type=int, default=1)
    parser.add_argument("--driver-slots", type=int, default=8)
    parser.add_argument("--dashboard-port", type=int, required=True)
    parser.add_argument("--agent-port", type=int, required=True)
    args = parser.parse_args()

    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": args.head_cpus,
            "resources": {"train_driver": args.driver_slots},
            "include_dashboard": True,
            "dashboard_host": "127.0.0.1",
            "dashboard_port": args.dashboard_port,
            # Not Ray's fixed default (52365): a local Ray on this machine may hold it, and the
            # head then has no job agent ("No available agent to submit job").
            "dashboard_agent_listen_port": args.agent_port,
        },
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        workers = [cluster.add_node(num_cpus=args.worker_cpus) for _ in range(args.workers)]
        nodes = [
            {
                "id": node.node_id,
                "ip": node.node_ip_address,
                "head": node is cluster.head_node,
                "raylet_pid": node.all_processes["raylet"][0].process.pid,
            }
            for node in (cluster.head_node, *workers)
        ]
        started = {"gcs": cluster.address, "dashboard": cluster.webui_url, "nodes": nodes}
        print(json.dumps(started), flush=True)
        sys.stdin.read()  # until the test closes it
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main()
