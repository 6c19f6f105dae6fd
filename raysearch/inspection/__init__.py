"""The searches and trials of an MLflow store or tracking server, read for `raysearch inspect`.

Compute first, then show: the readers return plain records (:class:`SearchInfo`,
:class:`TrialInfo`) built from what :mod:`raysearch.search` logs; sorting, filtering and the
table / JSON / CSV renderings are pure functions over those records.

What is read (see :mod:`raysearch.tracking`):

- a **search** is a run with the tag ``raysearch.search`` (its parent run; a plain training job,
  kind ``train``, is not one). Its metrics ``best_<metric>`` and tags ``raysearch.best_trial``
  and ``raysearch.best_run_id`` name the best trial once the search has ended;
- its **trials** are the runs whose ``mlflow.parentRunId`` is the search's run: the Optuna trial
  number (tag ``raysearch.optuna_trial``), the outcome (tag ``raysearch.status``; a run without
  it shows its MLflow status in lower case, e.g. ``running``), what Optuna sampled (params
  ``sampled.<name>``), the latest value of every metric.

Anything missing (a store written by an earlier version, a run still starting) reads as None and
shows as a blank; nothing here writes to the store.

The package: :mod:`~raysearch.inspection.records`, :mod:`~raysearch.inspection.reading`,
:mod:`~raysearch.inspection.filtering` and :mod:`~raysearch.inspection.rendering`; the names the
CLI uses are importable from here.
"""

from raysearch.inspection.filtering import (
    FILTER_HELP,
    Condition,
    filter_rows,
    parse_filter,
    parse_sort,
    select,
    sort_rows,
)
from raysearch.inspection.reading import (
    find_search,
    get_experiment,
    list_searches,
    list_trials,
    search_info,
    trial_info,
    trial_status,
)
from raysearch.inspection.records import (
    SEARCH_COLUMNS,
    TRIAL_COLUMNS,
    TRIAL_METRICS,
    SearchInfo,
    TrialInfo,
)
from raysearch.inspection.rendering import (
    format_duration,
    format_table,
    search_dict,
    search_records,
    searches_table,
    to_json,
    trial_dict,
    trial_records,
    trials_table,
    write_csv,
)

__all__ = [
    "FILTER_HELP",
    "SEARCH_COLUMNS",
    "TRIAL_COLUMNS",
    "TRIAL_METRICS",
    "Condition",
    "SearchInfo",
    "TrialInfo",
    "filter_rows",
    "find_search",
    "format_duration",
    "format_table",
    "get_experiment",
    "list_searches",
    "list_trials",
    "parse_filter",
    "parse_sort",
    "search_dict",
    "search_info",
    "search_records",
    "searches_table",
    "select",
    "sort_rows",
    "to_json",
    "trial_dict",
    "trial_info",
    "trial_records",
    "trial_status",
    "trials_table",
    "write_csv",
]
