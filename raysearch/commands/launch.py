"""`raysearch launch`: a Ray Tune + Optuna search over a search space, every trial in MLflow."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

from raysearch import exit_codes


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "launch",
        help="search a space of settings with Ray Tune and Optuna (each trial a Ray Train job)",
        description="Run the search of SPACE (a YAML file, see search_spaces/demo.yaml): Optuna "
        "samples each trial, Ray Train runs it, ASHA stops weak trials early, MLflow records "
        "a parent run for the search and a child run per trial. Prints one line per trial "
        "event, then the table of trials, the best trial (or the Pareto front) and the paths "
        "of the summary and plots.",
    )
    parser.add_argument("space", type=Path, help="search space YAML")
    parser.add_argument("--trials", type=int, default=None, help="trials (default: the budget's)")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: local)")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted search (the latest of this space, or --name)",
    )
    parser.add_argument(
        "--name", default=None, help="the search's name (default: <space name>-<date>-<time>)"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="show Ray's own output and the workers' logs"
    )
    parser.set_defaults(handler=run)


def _row_dict(row) -> dict:
    return {
        "trial": row.number,
        "status": row.status,
        "epochs": row.epochs,
        "params": row.params,
        "metrics": {
            key: value
            for key, value in row.metrics.items()
            if isinstance(value, int | float | str) and not key.startswith(("config", "time_"))
        },
        "mlflow_run_id": row.run_id,
        "error": row.error,
    }


def run(args: argparse.Namespace) -> int:
    from raysearch.spaces import load_space

    space = load_space(args.space)  # every mistake in the file surfaces here, before Ray starts
    from raysearch.search import launch

    printer = (lambda line: print(line, file=sys.stderr, flush=True)) if args.json else print
    with _document_output() if args.json else contextlib.nullcontext(sys.stdout) as document:
        result = launch(
            space,
            space_file=args.space,
            trials=args.trials,
            address=args.address,
            resume=args.resume,
            name=args.name,
            verbose=args.verbose,
            out=printer,
        )
        if args.json:
            _print_document(result, document)
        else:
            print_summary(result, space)
    if result.interrupted:
        print(
            f"raysearch: search {result.name} interrupted; continue it with: raysearch launch "
            f"{args.space} --resume --name {result.name}",
            file=sys.stderr,
        )
        return exit_codes.STOPPED if result.stop_reason else exit_codes.INTERRUPTED
    if result.rows and all(row.status == "failed" for row in result.rows):
        print(f"raysearch: every trial of {result.name} failed", file=sys.stderr)
        return exit_codes.FAILED
    return 0


@contextlib.contextmanager
def _document_output():
    """Standard output for the JSON document alone: yields the stream to write it to, while
    everything else written to standard output goes to standard error, from the start of the
    search to the exit of the process (Ray's driver threads may print that a node died, or
    the workers' output with -v, as late as that). In a process of its own this is done on
    the file descriptor, so it holds for what Ray's C++ core prints too; under a caller that
    replaced ``sys.stdout`` (a test), on the Python stream."""
    if sys.stdout is not sys.__stdout__ or sys.stderr is not sys.__stderr__:
        document = sys.stdout
        with contextlib.redirect_stdout(sys.stderr):
            yield document
        return
    sys.stdout.flush()
    document = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # for the rest of the process
    try:
        yield document
    finally:
        document.close()


def _print_document(result, stream) -> None:
    document = {
        "search": result.name,
        "mlflow_run_id": result.parent_run_id,
        "tracking_uri": result.tracking_uri,
        "experiment": result.experiment,
        "study": {"name": result.study_name, "storage": result.optuna_url},
        "interrupted": result.interrupted,
        "trials": [_row_dict(row) for row in result.rows],
        "best": [row.number for row in result.best],
        "artifacts": {key: str(path) for key, path in result.artifacts.items()},
        "notes": result.notes,
    }
    print(json.dumps(document, indent=2, default=str), file=stream, flush=True)


def print_summary(result, space) -> None:
    print()
    print(f"search {result.name}: {len(result.rows)} trials")
    print(result.table)
    if not result.best:
        print("no trial finished: no best trial")
    elif len(space.objectives) == 1:
        best = result.best[0]
        metric = space.metrics[0]
        print(
            f"best trial: {best.number} ({metric} {best.metrics[metric]:.4f}), "
            f"MLflow run {best.run_id}"
        )
        print("  " + " ".join(f"{k}={v}" for k, v in best.params.items()))
    else:
        names = " vs ".join(space.metrics)
        print(f"Pareto front ({names}): trials " + ", ".join(str(r.number) for r in result.best))
        for row in result.best:
            values = ", ".join(f"{m} {row.metrics[m]:.4f}" for m in space.metrics)
            print(f"  trial {row.number}: {values}, MLflow run {row.run_id}")
    for key, path in result.artifacts.items():
        print(f"{key}: {path}")
    for note in result.notes:
        print(f"note: {note}")
    print(f"MLflow: parent run {result.parent_run_id} in {result.tracking_uri}")
