"""`raysearch inspect`: the searches of an MLflow experiment, or the trials of one search."""

from __future__ import annotations

import argparse
from pathlib import Path

from raysearch.commands.models import resolve_tracking_uri
from trainables.errors import must
from trainables.outputs import check_output_file


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "inspect",
        help="list the searches in MLflow, or the trials of one search (sort, filter, JSON, CSV)",
        description="Read MLflow (the local store or the team's tracking server) and print the "
        "searches of an experiment, newest first: status, start, duration, trials by outcome "
        "and the best values. With --search, print that search's trials instead: number, "
        "outcome, what Optuna sampled, the final clean_leaf, robust_leaf, worst_superclass and "
        "transfer, epochs, duration and MLflow run id. Missing values are blank.",
        epilog="examples: raysearch inspect --search demo-20250101-120000 --sort robust_leaf; "
        "raysearch inspect --search RUN_ID --filter 'status=finished and param.optim.lr<1e-3' "
        "--csv trials.csv",
    )
    parser.add_argument("--experiment", default="raysearch", help="MLflow experiment (raysearch)")
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else ./mlflow.db)",
    )
    parser.add_argument(
        "--search", default=None, metavar="RUN_ID_OR_NAME", help="show this search's trials"
    )
    parser.add_argument(
        "--sort",
        default=None,
        metavar="METRIC[:asc]",
        help="sort by a metric or column, descending (':asc' ascending); missing values last",
    )
    parser.add_argument(
        "--filter",
        default=None,
        metavar="EXPR",
        help="keep rows where e.g. 'robust_leaf>0.5 and status=finished' or "
        "'param.optim.lr<1e-3' holds (= != < <= > >=)",
    )
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print a JSON document")
    output.add_argument("--csv", type=Path, default=None, metavar="FILE", help="write a CSV file")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from raysearch import inspection, stores

    if not args.experiment:
        raise must("--experiment", "a non-empty name", args.experiment)
    if args.csv is not None:
        args.csv = check_output_file(args.csv, "--csv")
    uri = resolve_tracking_uri(args.tracking_uri)
    client = stores.open_store(uri, read_only=True)
    if args.search is None:
        searches = inspection.list_searches(client, args.experiment)
        shown = inspection.select(
            searches, sort=args.sort, where=args.filter, columns=inspection.SEARCH_COLUMNS
        )
        return _show_searches(args, uri, shown, total=len(searches))
    search = inspection.find_search(client, args.experiment, args.search)
    trials = inspection.list_trials(client, search)
    shown = inspection.select(
        trials, sort=args.sort, where=args.filter, columns=inspection.TRIAL_COLUMNS
    )
    return _show_trials(args, uri, search, shown, total=len(trials))


def _show_searches(args, uri: str, searches: list, *, total: int) -> int:
    from raysearch import inspection

    if args.json:
        document = {
            "tracking_uri": uri,
            "experiment": args.experiment,
            "searches": [inspection.search_dict(search) for search in searches],
        }
        print(inspection.to_json(document))
    elif args.csv is not None:
        header = ("search", "status", "start_time", "duration_s", "trials", "run_id")
        print(inspection.write_csv(inspection.search_records(searches), args.csv, header=header))
    elif not searches:
        what = "no searches match" if total else "no searches"
        print(f"{what} in experiment {args.experiment!r} ({uri})")
    else:
        print(f"experiment {args.experiment!r} ({uri}): {_count(searches, total, 'search')}")
        print(inspection.searches_table(searches))
    return 0


def _show_trials(args, uri: str, search, trials: list, *, total: int) -> int:
    from raysearch import inspection

    if args.json:
        document = {
            "tracking_uri": uri,
            "experiment": args.experiment,
            "search": inspection.search_dict(search),
            "trials": [inspection.trial_dict(trial) for trial in trials],
        }
        print(inspection.to_json(document))
        return 0
    if args.csv is not None:
        header = ("trial", "status", *inspection.TRIAL_METRICS, "epochs", "duration_s", "run_id")
        print(inspection.write_csv(inspection.trial_records(trials), args.csv, header=header))
        return 0
    print(
        f"search {search.name} ({search.status}, MLflow run {search.run_id}): "
        f"{_count(trials, total, 'trial')}"
    )
    if search.best_trial is not None:
        values = ", ".join(f"{name} {value:.4g}" for name, value in search.best.items())
        print(f"best trial: {search.best_trial}" + (f" ({values})" if values else ""))
    if trials:
        print(inspection.trials_table(trials, sort=args.sort))
    elif total:
        print("no trials match")
    elif search.trial_count:  # counts from the parent run, no child runs in this store
        print(
            f"no trial runs in this store (the search recorded {search.trial_count}: they were "
            "deleted, or logged to another store)"
        )
    else:
        print("no trials yet")
    return 0


def _count(rows: list, total: int, noun: str) -> str:
    plural = "es" if noun.endswith("h") else "s"
    text = f"{total} {noun}{'' if total == 1 else plural}"
    return text if len(rows) == total else f"{len(rows)} of {text} shown"
