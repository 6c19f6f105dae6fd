"""MLflow naming and bookkeeping of training jobs (the thin logging layer over computed results).

One MLflow run per job, found again by the job's tag ``raysearch.job`` so that a retried or
resumed job continues its run instead of creating another. A search has one parent run (tag
``raysearch.search``, kind ``search``); its trials' runs carry ``mlflow.parentRunId`` and end
with ``raysearch.status`` = ``finished``, ``pruned`` (stopped early by the scheduler: FINISHED,
not FAILED) or ``failed``. The driver creates (or reopens) the run and logs params and
artifacts; rank 0 of the workers logs per-epoch metrics into it through the :class:`EpochLog`
the driver puts in the job's spec. Runs end FINISHED, or FAILED with the reason in the tag
``raysearch.error``; a job or search stopped by Ctrl-C or SIGTERM ends KILLED
(:mod:`raysearch.stopping`). Values written into MLflow filter strings go through
:func:`filter_value`; stores are checked before use by :mod:`raysearch.stores`.
"""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path

from trainables.errors import must
from trainables.names import is_folder_name
from trainables.numbers import is_number

JOB_TAG = "raysearch.job"
ERROR_TAG = "raysearch.error"
KIND_TAG = "raysearch.kind"
SEARCH_TAG = "raysearch.search"
TRIAL_TAG = "raysearch.trial"
STATUS_TAG = "raysearch.status"
PARENT_TAG = "mlflow.parentRunId"
#: The Ray node a search trial runs on now, and every node it ran on (a trial restarted after
#: its node failed runs on another), comma-separated in order.
NODE_TAG = "raysearch.node"
NODES_TAG = "raysearch.nodes"
#: The attempt of a job that logs its epochs now: each start of its training loop claims the
#: run, and an earlier attempt still running (on a node presumed dead) stops at its next epoch.
ATTEMPT_TAG = "raysearch.attempt"
ARTIFACT_FOLDER = "mlartifacts"
#: An MLflow run id.
RUN_ID = re.compile(r"[0-9a-f]{32}")
#: Runs per request when reading every run of a query.
_PAGE = 1000


class TrackingUnavailable(RuntimeError):
    """The tracking store did not take a write even after MLflow's retries (a server down for
    longer than ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` with backoff covers): the job fails, saying
    so, instead of training on without its metrics."""


def unavailable(uri: str, what: str, error: BaseException) -> TrackingUnavailable:
    """The error of a store that did not answer while a job was to do ``what``."""
    reason = " ".join(str(error).split())
    return TrackingUnavailable(
        f"the MLflow tracking store {uri} did not answer (to {what}) after MLflow's retries: "
        f"{reason[-300:]}"
    )


def store_errors() -> tuple[type[BaseException], ...]:
    """What reading a run or its artifacts raises when they are missing or cannot be read (an
    ``except`` clause evaluates this only when something was raised, so MLflow loads lazily)."""
    from mlflow.exceptions import MlflowException

    return (MlflowException, OSError)


def client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def sqlite_file(uri: str) -> Path | None:
    """The database file of a SQLite store URI (``sqlite:///PATH``, ``sqlite+DRIVER:///PATH``)
    as SQLAlchemy opens it: relative to the working directory unless absolute
    (``sqlite:////abs/path``), without the ``?query``. None for any other store."""
    scheme, separator, rest = uri.partition(":///")
    if not separator or scheme.lower().partition("+")[0] != "sqlite":
        return None
    return Path(rest.partition("?")[0])


def artifact_root(uri: str) -> str | None:
    """Where runs of a SQLite store keep their artifacts: ``mlartifacts`` beside the database
    (None for other stores, which have their own)."""
    database = sqlite_file(uri)
    if database is None:
        return None
    return (database.expanduser().resolve().parent / ARTIFACT_FOLDER).as_uri()


def experiment_id(mlflow_client, name: str) -> str:
    """Get or create the experiment; artifacts of a local store go next to the database."""
    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = artifact_root(mlflow_client.tracking_uri)
    return mlflow_client.create_experiment(name, artifact_location=location)


def all_runs(mlflow_client, experiment_ids: list[str], filter_string: str = "") -> list:
    """Every active run matching ``filter_string``, however many (MLflow returns a page at a
    time). MLflow's own errors pass through."""
    runs, token = [], None
    while True:
        page = mlflow_client.search_runs(
            experiment_ids, filter_string=filter_string, max_results=_PAGE, page_token=token
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def child_runs(
    mlflow_client, experiment: str, parent_run_id: str, *, running_only: bool = False
) -> list:
    """The runs of ``experiment`` whose parent is ``parent_run_id`` (a search's trials), every
    page of them; only those still RUNNING with ``running_only``."""
    parent = filter_value(parent_run_id, field="run id")
    query = f"tags.`{PARENT_TAG}` = {parent}"
    if running_only:
        query += " and attributes.status = 'RUNNING'"
    return all_runs(mlflow_client, [experiment], query)


def is_search_run(run) -> bool:
    """A search's parent run (a training job's run, kind ``train``, is never one)."""
    tags = run.data.tags
    return bool(tags.get(SEARCH_TAG)) and tags.get(KIND_TAG, "search") == "search"


def find_search_run(mlflow_client, experiment: str | None, ref: str):
    """The run ``ref`` names: a run id (in any experiment; returned whatever it is, for the
    caller to refuse a run that is no search's), else the newest search named ``ref`` in
    ``experiment`` (not looked for when ``experiment`` is None). None when there is neither. A
    name that is no valid search name is never put into a filter string."""
    from mlflow.exceptions import MlflowException

    if RUN_ID.fullmatch(ref):
        try:
            return mlflow_client.get_run(ref)
        except MlflowException:  # no such run: perhaps a search named like a run id
            pass
    if experiment is None or not is_folder_name(ref):  # what `launch --name` accepts
        return None
    query = f"tags.`{SEARCH_TAG}` = {filter_value(ref, field='--search')}"
    found = [run for run in all_runs(mlflow_client, [experiment], query) if is_search_run(run)]
    return max(found, key=lambda run: run.info.start_time or 0) if found else None


def find_run(mlflow_client, experiment: str, tag: str, value: str):
    """The run whose ``tag`` is ``value`` in ``experiment`` (None when there is none)."""
    query = f"tags.`{tag}` = {filter_value(value, field=tag)}"
    runs = mlflow_client.search_runs([experiment], filter_string=query, max_results=2)
    return runs[0] if runs else None


def find_job_run(mlflow_client, experiment: str, job: str):
    """The run of ``job`` in ``experiment`` (None when there is none)."""
    return find_run(mlflow_client, experiment, JOB_TAG, job)


def get_or_create_job_run(mlflow_client, experiment: str, job: str, *, tags: dict | None = None):
    """The job's run, reopened (status RUNNING) when it exists, with ``tags`` set again (a
    restarted trial's node changes); created otherwise."""
    return _get_or_create(mlflow_client, experiment, JOB_TAG, job, "train", tags)


def get_or_create_search_run(mlflow_client, experiment: str, search: str):
    """The parent run of ``search``, reopened when it exists; created otherwise."""
    return _get_or_create(mlflow_client, experiment, SEARCH_TAG, search, "search", None)


def _get_or_create(mlflow_client, experiment: str, tag: str, value: str, kind: str, tags):
    run = find_run(mlflow_client, experiment, tag, value)
    if run is not None:
        mlflow_client.update_run(run.info.run_id, status="RUNNING")
        for key, text in (tags or {}).items():
            if run.data.tags.get(key) != text:
                mlflow_client.set_tag(run.info.run_id, key, text)
        return run, False
    run = mlflow_client.create_run(
        experiment, run_name=value, tags={tag: value, KIND_TAG: kind, **(tags or {})}
    )
    return run, True


def node_tags(run, node: str) -> dict[str, str]:
    """:data:`NODE_TAG` and :data:`NODES_TAG` for a job about to run on ``node``, given its run
    so far (None before its first start)."""
    before = run.data.tags.get(NODES_TAG, "") if run is not None else ""
    nodes = [name for name in before.split(",") if name]
    if not nodes or nodes[-1] != node:
        nodes.append(node)
    return {NODE_TAG: node, NODES_TAG: ",".join(nodes)}


def log_params(mlflow_client, run_id: str, params: dict) -> None:
    """Log flattened params (MLflow caps values at 6000 characters)."""
    from mlflow.entities import Param

    entries = [Param(key, str(value)[:6000]) for key, value in params.items()]
    for start in range(0, len(entries), 100):  # log_batch takes at most 100 params
        mlflow_client.log_batch(run_id, params=entries[start : start + 100])


def end_run(mlflow_client, run_id: str, *, error: str | None = None) -> None:
    if error is None:
        mlflow_client.set_terminated(run_id, status="FINISHED")
        return
    mlflow_client.set_tag(run_id, ERROR_TAG, error[:5000])
    mlflow_client.set_terminated(run_id, status="FAILED")


# -- filter strings ------------------------------------------------------------------------------


def filter_value(value: str, *, field: str) -> str:
    """``value`` as a quoted literal of an MLflow filter string.

    MLflow strips the quotes and reads what is between them as is: there is no escape. A value
    holding a single quote is written in double quotes; one holding both kinds of quote, a
    backslash (its parser reads one before the closing quote as an escape) or a control
    character cannot be written, and is refused with ``field`` named.
    """
    if "\\" in value or ("'" in value and '"' in value) or not value.isprintable():
        raise must(
            field,
            "free of backslashes, control characters and one of the two kinds of quote",
            value,
        )
    return f'"{value}"' if "'" in value else f"'{value}'"


class AttemptSuperseded(RuntimeError):
    """A later attempt of the job claimed its run while this one still ran: Ray presumed this
    attempt's node dead (a stall, a partition) and restarted the job elsewhere. This one stops
    before it logs or checkpoints another epoch."""


class EpochLog:
    """Per-epoch metrics into a job's MLflow run, by step = epoch, each epoch written once: a
    restarted worker group skips the epochs the run already holds.

    Rank 0 of the training loop calls :meth:`begin` once, before it restores a checkpoint, then
    ``log_epoch(epoch, metrics)`` after each epoch. ``begin`` claims the run for this attempt
    (tag :data:`ATTEMPT_TAG`); each later epoch first checks the claim still holds and raises
    :class:`AttemptSuperseded` if a later attempt took the run over. It is pickled to the
    workers, which open their own MLflow client on first use.
    """

    def __init__(self, tracking_uri: str, run_id: str):
        self.tracking_uri, self.run_id = tracking_uri, run_id
        self._client = None
        self._logged: set[int] | None = None  # read from the run once per process
        self._attempt: str | None = None  # set by begin(), in the worker

    def __getstate__(self) -> dict:
        state = {"tracking_uri": self.tracking_uri, "run_id": self.run_id}
        return {**state, "_client": None, "_logged": None, "_attempt": None}

    def begin(self) -> None:
        """Claim the run for this attempt of the job."""
        attempt = uuid.uuid4().hex
        try:
            self._mlflow().set_tag(self.run_id, ATTEMPT_TAG, attempt)
        except store_errors() as error:
            what = f"claim run {self.run_id} for a new attempt"
            raise unavailable(self.tracking_uri, what, error) from None
        self._attempt = attempt
        self._logged = self.logged_epochs()

    def _check_claim(self, epoch: int) -> None:
        try:
            holder = self._mlflow().get_run(self.run_id).data.tags.get(ATTEMPT_TAG)
        except store_errors() as error:
            what = f"read the attempt of run {self.run_id}"
            raise unavailable(self.tracking_uri, what, error) from None
        if holder != self._attempt:
            raise AttemptSuperseded(
                f"attempt {self._attempt} of run {self.run_id} stops before logging epoch "
                f"{epoch}: attempt {holder} took the run over (Ray restarted the job elsewhere "
                "after it presumed this attempt's node dead)"
            )

    def _mlflow(self):
        if self._client is None:
            self._client = client(self.tracking_uri)
        return self._client

    def logged_epochs(self) -> set[int]:
        try:
            history = self._mlflow().get_metric_history(self.run_id, "epoch")
        except store_errors() as error:
            what = f"read the epochs of run {self.run_id}"
            raise unavailable(self.tracking_uri, what, error) from None
        return {metric.step for metric in history}

    def __call__(self, epoch: int, metrics: dict[str, float]) -> None:
        if self._attempt is not None:
            self._check_claim(epoch)
        if self._logged is None:
            self._logged = self.logged_epochs()
        if epoch in self._logged:
            return
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        entries = [
            Metric(key=key.replace("/", "."), value=float(value), timestamp=stamp, step=epoch)
            for key, value in metrics.items()
            if is_number(value) and key != "epoch"
        ]
        # "epoch" last: its presence marks the epoch as completely logged.
        entries.append(Metric(key="epoch", value=float(epoch), timestamp=stamp, step=epoch))
        try:
            self._mlflow().log_batch(self.run_id, metrics=entries)
        except store_errors() as error:
            what = f"log epoch {epoch} of run {self.run_id}"
            raise unavailable(self.tracking_uri, what, error) from None
        self._logged.add(epoch)
