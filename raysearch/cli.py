"""The `raysearch` command line.

Every command module registers its sub-parser and a handler ``run(args) -> int``. User mistakes
surface as :class:`~trainables.errors.UserInputError`: one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys

from raysearch import __version__, exit_codes
from raysearch.commands import (
    compare,
    data,
    demo,
    evaluate,
    inspect,
    launch,
    predict,
    pretrain,
    promote,
    train,
    trees,
    ui,
)
from raysearch.tracking import TrackingUnavailable
from trainables.errors import UserInputError


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors in the project's one-line form, with exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserInputError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="raysearch",
        description="Hierarchy-aware adversarial fine-tuning of CLIP models.",
    )
    parser.add_argument("--version", action="version", version=f"raysearch {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    subparsers.required = True
    commands = (demo, trees, data, pretrain, compare, train, launch, inspect, ui, promote)
    for module in (*commands, predict, evaluate):
        module.register(subparsers)
    return parser


QUIET_MLFLOW_VARIABLE = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 failed run, 2 bad input)."""
    # MLflow prints "View run ... at: URL" to stdout whenever a run ends on a tracking server,
    # which would break --json output and the progress lines; `inspect` gives those links.
    os.environ.setdefault(QUIET_MLFLOW_VARIABLE, "true")
    try:
        args = build_parser().parse_args(argv)
        return int(args.handler(args) or exit_codes.OK)
    except UserInputError as error:
        print(f"raysearch: error: {error}", file=sys.stderr)
        return exit_codes.USAGE
    except TrackingUnavailable as error:  # after MLflow's retries; what was done is kept
        print(f"raysearch: error: {error}", file=sys.stderr)
        return exit_codes.FAILED
    except BrokenPipeError:  # `raysearch trees show ... | head`: the reader has what it wanted
        # Python flushes stdout again at exit; point it at nothing so that flush cannot fail.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return exit_codes.OK
    except KeyboardInterrupt as interrupt:
        from raysearch.stopping import Stopped

        if isinstance(interrupt, Stopped):  # the shell's code for a process ended by SIGTERM
            print("raysearch: stopped by SIGTERM", file=sys.stderr)
            return exit_codes.STOPPED
        print("raysearch: interrupted", file=sys.stderr)
        return exit_codes.INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
