"""`raysearch ui`: the MLflow UI on the tracking store the other commands write to."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from raysearch.runtime import is_loopback
from raysearch.tracking import artifact_root
from trainables.errors import must

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 5000
_EVERY_INTERFACE = ("0.0.0.0", "::")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ui",
        help="start the MLflow UI on this tool's tracking store (127.0.0.1:5000 by default)",
        description="Run `mlflow ui` on the store the searches write to (the default "
        "./mlflow.db, $MLFLOW_TRACKING_URI, or --tracking-uri), with the artifacts of a local "
        "store in the mlartifacts folder beside it. It listens on 127.0.0.1 only unless --host "
        "says otherwise. Ctrl-C stops it.",
    )
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow store (default: $MLFLOW_TRACKING_URI, else ./mlflow.db)",
    )
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"interface to listen on (default {DEFAULT_HOST}; 0.0.0.0 exposes it to the network)",
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port ({DEFAULT_PORT})")
    parser.set_defaults(handler=run)


def ui_command(
    uri: str, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, python: str = sys.executable
) -> list[str]:
    """The ``mlflow ui`` command line for ``uri`` (pure: nothing is started here)."""
    if not host.strip():
        raise must("--host", "an interface address such as 127.0.0.1", host)
    if not 0 < port < 65536:
        raise must("--port", "a port between 1 and 65535", port)
    command = [python, "-m", "mlflow", "ui", "--backend-store-uri", uri]
    root = artifact_root(uri)
    if root is not None:
        command += ["--default-artifact-root", root]
    return command + ["--host", host, "--port", str(port)]


def ui_url(host: str, port: int) -> str:
    """Where a browser on this machine finds the UI."""
    shown = "127.0.0.1" if host in _EVERY_INTERFACE else host
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"  # an IPv6 address
    return f"http://{shown}:{port}"


def exposure_note(host: str) -> str | None:
    """The warning for a UI that other machines can reach (None on loopback)."""
    if is_loopback(host):
        return None
    where = f"every interface ({host})" if host in _EVERY_INTERFACE else host
    return (
        f"raysearch: note: listening on {where}, not only on this machine: anyone who can "
        "reach it can read and change the runs"
    )


def run(args: argparse.Namespace) -> int:
    from raysearch.commands.models import resolve_tracking_uri

    uri = resolve_tracking_uri(args.tracking_uri)
    if uri.startswith(("http://", "https://")):
        print(f"MLflow UI: {uri} (the tracking server serves its own UI)")
        return 0
    from raysearch.stores import require_store

    require_store(uri)
    command = ui_command(uri, host=args.host, port=args.port)
    print(f"MLflow UI: {ui_url(args.host, args.port)} (store {uri}); Ctrl-C stops it", flush=True)
    note = exposure_note(args.host)
    if note is not None:
        print(note, file=sys.stderr)
    return _hand_over(command)


def _hand_over(command: list[str]) -> int:
    """Become the MLflow server (POSIX): a signal to this process (Ctrl-C, SIGTERM from a
    supervisor) then reaches the server itself, where a child process would be orphaned."""
    sys.stdout.flush()
    sys.stderr.flush()
    if os.name == "posix":
        os.execv(command[0], command)
        return 0  # not reached: execv does not return
    try:
        return subprocess.call(command)
    except KeyboardInterrupt:
        return 0
