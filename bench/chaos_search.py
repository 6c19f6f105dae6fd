"""Kill a local search at random moments, resume it each time, and check that its records agree.

    python bench/chaos_search.py [--seed 0] [--kills 5] [--workdir DIR]

`raysearch launch --resume` promises that a search whose driver was killed outright continues
without running a trial twice or giving one a second MLflow run. One test kills a driver once,
at a chosen moment; this script kills it ``--kills`` times at moments drawn by
``random.Random(--seed)``, to reach the windows no test aims at (Ray starting, Tune restoring,
a trial being told to Optuna, a run being closed).

1. It writes a small search (8 trials, 2 at a time, 3 epochs of ``--train-size`` images, ASHA,
   the embedded dataset and base model) with its MLflow store, Optuna study and
   ``ray_results`` in the work folder.
2. It starts ``python -m raysearch.cli launch SPACE --name chaos`` in a session of its own,
   waits a random delay, SIGKILLs the driver's process group (the driver and the local Ray it
   started), checks that no process of the group is left and that Ray's workers (each in a
   group of its own in that session) end too, and starts ``launch --resume``; after the last
   kill the resume (with ``--json``) runs to the end. A first launch is not killed before
   Tune saved its state (``--resume`` could not continue it then).
3. It reads Optuna's study, Tune's saved state (``tune.ExperimentAnalysis``) and the MLflow
   runs, and checks trial by trial that they and the final ``--json`` summary agree
   (:func:`disagreements`).

Prints the kill moments, a table of the trials in each record, the trials per status and the
verdict; exits 0 when everything agrees, 1 otherwise. The work folder (``driver.log``,
``chaos.json``, the stores) is kept; ``--check-only --workdir DIR`` compares its records again.
It never runs ``ray stop`` and signals only processes of the sessions it started.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"
SEARCH = "chaos"
OBJECTIVE = "robust_leaf"
EPOCHS = 3
TRIALS = 8

#: Optuna's final states and the outcome each stands for in Tune, MLflow and the summary.
OUTCOME_OF_STATE = {"COMPLETE": "finished", "PRUNED": "pruned", "FAIL": "failed"}
#: The MLflow status a trial's run ends with, by outcome.
RUN_STATUS_OF_OUTCOME = {"finished": "FINISHED", "pruned": "FINISHED", "failed": "FAILED"}
VALUE_TOLERANCE = 1e-9


# -- the search ----------------------------------------------------------------------------------


def write_space(workdir: Path, seed: int, train_size: int) -> Path:
    """A search of about four minutes here, with its stores in ``workdir``: long enough for
    every kill to land while it runs (with the tests' 512 images it ends in about 30 s).

    The evaluation eps is sampled between a tiny and a large value, so the robust accuracies
    ASHA compares at its first rung differ widely and some trials are pruned.
    """
    import yaml

    space = {
        "name": SEARCH,
        "base": str(SPACES / "embedded-experiment.yaml"),
        "overrides": [
            f"data.train_size={train_size}",
            "data.eval_samples=64",
            "data.zeroshot_samples=24",
            "optim.batch_size=64",
            f"optim.epochs={EPOCHS}",
            "optim.warmup_steps=2",
            "evaluation.steps=2",
            "attack.steps=1",
            f"checkpoint.storage_path={workdir / 'ray_results'}",
            f"mlflow.tracking_uri=sqlite:///{workdir / 'mlflow.db'}",
        ],
        "objective": {"metric": OBJECTIVE, "mode": "max"},
        "budget": {
            "trials": TRIALS,
            "concurrency": 2,
            "scheduler": "asha",
            "grace_epochs": 1,
            "reduction_factor": 2,
            "seed": seed,
        },
        "space": {
            "trees": {"type": "subset", "of": ["form", "symmetry"], "min": 1, "max": 2},
            "depth": {"type": "int", "low": 1, "high": 2},
            "evaluation.eps": {"type": "categorical", "choices": [0.0001, 0.2]},
            "optim.lr": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True},
        },
    }
    path = workdir / f"{SEARCH}.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path


def start_driver(space: Path, workdir: Path, *, resume: bool, json_out: Path | None = None):
    """``raysearch launch`` in a new session (its process group holds the Ray it starts)."""
    command = [sys.executable, "-m", "raysearch.cli", "launch", str(space), "--name", SEARCH]
    if resume:
        command.append("--resume")
    if json_out is not None:
        command.append("--json")
    log = (workdir / "driver.log").open("a")
    log.write(f"\n=== {' '.join(command[2:])} ===\n")
    log.flush()
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for variable in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI"):  # this search's own Ray and store
        environment.pop(variable, None)
    stdout = json_out.open("w") if json_out is not None else log
    with log, stdout:  # the driver holds its own copies
        return subprocess.Popen(
            command,
            stdout=stdout,
            stderr=log,
            cwd=workdir,
            env=environment,
            start_new_session=True,
        )


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state, ppid, pgrp, ...)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()


def _pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def live_processes(*, field: int, value: int) -> list[int]:
    """Live processes whose /proc stat ``field`` (2: process group, 3: session) is ``value``;
    zombies are left out, they only wait to be reaped."""
    found = []
    for pid in _pids():
        fields = _stat_fields(pid)
        if fields and int(fields[field]) == value and fields[0] not in ("Z", "X"):
            found.append(pid)
    return sorted(found)


GROUP, SESSION = 2, 3


def descendants(root: int) -> set[tuple[int, str]]:
    """``(pid, start time)`` of every live process below ``root``, to spot one that left its
    session (a pid alone could be reused)."""
    children: dict[int, list[int]] = {}
    start = {}
    for pid in _pids():
        fields = _stat_fields(pid)
        if fields and fields[0] not in ("Z", "X"):
            children.setdefault(int(fields[1]), []).append(pid)
            start[pid] = fields[19]
    found, frontier = set(), [root]
    while frontier:
        for child in children.get(frontier.pop(), []):
            if (child, start[child]) not in found:
                found.add((child, start[child]))
                frontier.append(child)
    return found


def still_alive(processes: set[tuple[int, str]]) -> list[int]:
    alive = []
    for pid, started in processes:
        fields = _stat_fields(pid)
        if fields and fields[19] == started and fields[0] not in ("Z", "X"):
            alive.append(pid)
    return sorted(alive)


def _wait_until_gone(field: int, value: int, seconds: float) -> float:
    started = time.monotonic()
    while live_processes(field=field, value=value) and time.monotonic() - started < seconds:
        time.sleep(0.1)
    return time.monotonic() - started


def kill_group(driver: subprocess.Popen, settle_seconds: float = 30.0) -> dict:
    """SIGKILL the driver's process group, reap the driver, and wait until the group is gone.

    The driver leads a session of its own (``start_new_session``), so its group and session
    ids are its pid. Ray runs each worker in a process group of its own within that session:
    those are not signalled; they should end when their raylet dies. Returns what was left:
    ``left`` (the group, after ``settle_seconds``), ``session_s`` (seconds until the rest of
    the session ended on its own), ``stragglers`` (session processes still alive after
    ``settle_seconds``, then killed with their groups: all of them started by this driver)
    and ``escaped`` (former descendants that left the session; only reported).
    """
    below = descendants(driver.pid)
    with contextlib.suppress(ProcessLookupError):  # the driver ended meanwhile; its Ray may not
        os.killpg(driver.pid, signal.SIGKILL)
    driver.wait(timeout=60)
    _wait_until_gone(GROUP, driver.pid, settle_seconds)
    left = live_processes(field=GROUP, value=driver.pid)
    session_s = _wait_until_gone(SESSION, driver.pid, settle_seconds)
    stragglers = live_processes(field=SESSION, value=driver.pid)
    for pid in stragglers:
        fields = _stat_fields(pid)
        if fields and int(fields[SESSION]) == driver.pid:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(fields[GROUP]), signal.SIGKILL)
    _wait_until_gone(SESSION, driver.pid, settle_seconds)
    return {
        "left": left,
        "session_s": session_s,
        "stragglers": stragglers,
        "escaped": sorted(set(still_alive(below)) - set(stragglers)),
    }


def last_progress_line(workdir: Path) -> str:
    """The driver's last progress line: what the search was doing when it was killed."""
    lines = (workdir / "driver.log").read_text(errors="replace").splitlines()
    for line in reversed(lines):
        if line.startswith("==="):
            return "(nothing yet: Ray starting)"
        if line.startswith(("[", "resuming", "starting")):
            return line.strip()[:100]
    return ""


def resumable(workdir: Path) -> bool:
    """Whether ``launch --resume`` can restore the search (raysearch asks Tune's
    ``Tuner.can_restore``, which looks for this file)."""
    return (workdir / "ray_results" / "searches" / SEARCH / "tune" / "tuner.pkl").is_file()


def wait_until_resumable(driver: subprocess.Popen, workdir: Path, timeout: float = 300.0) -> float:
    """Seconds waited until the search is resumable (or the driver ended, or ``timeout``)."""
    started = time.monotonic()
    while not resumable(workdir) and driver.poll() is None:
        if time.monotonic() - started > timeout:
            break
        time.sleep(0.2)
    return time.monotonic() - started


def run_with_kills(space: Path, workdir: Path, rng: random.Random, args) -> dict:
    """Launch, kill ``args.kills`` times at random moments (resuming after each), then resume
    once more with ``--json`` and let the search end. Returns what happened."""
    kills, problems, notes = [], [], []
    chaos_started = time.monotonic()
    resume = False
    for number in range(1, args.kills + 1):
        delay = rng.uniform(args.min_delay, args.max_delay)
        driver = start_driver(space, workdir, resume=resume)
        launched = time.monotonic()
        try:
            code = driver.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            code = None
        waited = 0.0
        if code is None and not resumable(workdir):
            # A first launch killed before Tune wrote its tuner.pkl could neither resume nor
            # start again under its name (its folder exists): wait for that file instead.
            waited = wait_until_resumable(driver, workdir)
            code = driver.poll()
        resume = True
        if code == 0:  # the search ended before this kill: the last resume only reports
            notes.append(f"the search ended before kill {number}; later kills skipped")
            break
        if code is not None:
            problems.append(f"launch before kill {number} exited {code} of its own accord")
            continue
        doing = last_progress_line(workdir)
        moment = {
            "kill": number,
            "planned_s": delay,
            "postponed_s": waited,
            "after_launch_s": time.monotonic() - launched,
            "since_start_s": time.monotonic() - chaos_started,
            "doing": doing,
        }
        leftovers = kill_group(driver)
        kills.append({**moment, **leftovers})
        for what in ("left", "stragglers", "escaped"):
            if leftovers[what]:
                problems.append(f"kill {number}: processes {what}: {leftovers[what]}")
    json_out = workdir / "summary.json"
    driver = start_driver(space, workdir, resume=resume, json_out=json_out)
    try:
        code = driver.wait(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        kill_group(driver)
        code = f"none: killed after {args.timeout} s"
    if code != 0:
        problems.append(f"the last resume exited {code} (see {workdir / 'driver.log'})")
    return {
        "kills": kills,
        "problems": problems,
        "notes": notes,
        "summary": read_summary(json_out),
    }


def read_summary(path: Path) -> dict | None:
    """The ``--json`` document: stdout from its opening brace (a library may print before)."""
    text = path.read_text() if path.is_file() else ""
    start = text.find("{\n")
    try:
        return json.loads(text[start:]) if start >= 0 else None
    except ValueError:
        return None


# -- the three records, as plain data ------------------------------------------------------------


def optuna_records(storage: str) -> list[dict]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=SEARCH, storage=storage)
    return [
        {
            "number": trial.number,
            "state": trial.state.name,
            "values": list(trial.values) if trial.values is not None else None,
            "intermediate": dict(trial.intermediate_values),
            "params": dict(trial.params),
        }
        for trial in study.get_trials(deepcopy=False)
    ]


def tune_records(tune_folder: Path) -> list[dict]:
    """Tune's trials as its saved experiment state holds them (read only, no Ray started)."""
    from ray import tune

    from raysearch.search_state import FINISHED_KEY, NUMBER_KEY

    analysis = tune.ExperimentAnalysis(str(tune_folder))
    records = []
    for trial in analysis.trials:
        result = trial.last_result or {}
        number = trial.config.get(NUMBER_KEY)
        records.append(
            {
                "trial_id": trial.trial_id,
                "number": int(number) if number is not None else None,
                "status": trial.status,
                "finished": bool(result.get(FINISHED_KEY)),
                "value": result.get(OBJECTIVE),
            }
        )
    return records


def mlflow_records(tracking_uri: str) -> tuple[list[dict], list[dict]]:
    """``(parents, runs)``: the search's parent runs and every run of a trial of it."""
    from raysearch import tracking

    client = tracking.client(tracking_uri)
    experiment = client.get_experiment_by_name("raysearch")
    if experiment is None:
        return [], []
    everything = tracking.all_runs(client, [experiment.experiment_id])
    parents = [
        {"run_id": run.info.run_id, "status": run.info.status}
        for run in everything
        if run.data.tags.get(tracking.SEARCH_TAG) == SEARCH
    ]
    runs = []
    for run in everything:
        tags = run.data.tags
        if tags.get("raysearch.search_name") != SEARCH:
            continue
        number = tags.get("raysearch.optuna_trial")
        history = client.get_metric_history(run.info.run_id, OBJECTIVE)
        runs.append(
            {
                "run_id": run.info.run_id,
                "number": int(number) if number is not None else None,
                "parent": tags.get(tracking.PARENT_TAG),
                "status": run.info.status,
                "outcome": tags.get(tracking.STATUS_TAG),
                "value": run.data.metrics.get(OBJECTIVE),
                "values_by_epoch": {m.step: m.value for m in history},
                "epoch_steps": sorted(
                    m.step for m in client.get_metric_history(run.info.run_id, "epoch")
                ),
            }
        )
    return parents, runs


def summary_records(summary: dict | None) -> dict | None:
    if summary is None:
        return None
    return {
        "interrupted": summary.get("interrupted"),
        "trials": [
            {
                "number": row["trial"],
                "status": row["status"],
                "value": (row.get("metrics") or {}).get(OBJECTIVE),
            }
            for row in summary.get("trials", [])
        ],
    }


# -- the comparison ----------------------------------------------------------------------------


def _same(a, b) -> bool:
    if a is None or b is None:
        return False
    return math.isclose(float(a), float(b), rel_tol=0.0, abs_tol=VALUE_TOLERANCE)


def optuna_value(trial: dict):
    """The first objective's value of an Optuna trial record (None: it has none)."""
    return (trial.get("values") or [None])[0]


def tune_outcome(record: dict) -> str:
    """finished / pruned / failed, as the search reads a Tune trial; else its Tune status."""
    if record["status"] == "ERROR":
        return "failed"
    if record["status"] == "TERMINATED":
        return "finished" if record["finished"] else "pruned"
    return f"unfinished ({record['status']})"


def _by_number(records: list[dict]) -> dict[int | None, list[dict]]:
    grouped: dict[int | None, list[dict]] = {}
    for record in records:
        grouped.setdefault(record["number"], []).append(record)
    return grouped


def disagreements(
    optuna_trials: list[dict],
    tune_trials: list[dict],
    parents: list[dict],
    runs: list[dict],
    summary: dict | None,
    *,
    trials: int,
    epochs: int | None = None,
) -> list[str]:
    """Every way the records of one ended search disagree (empty: they agree).

    Optuna's study is the reference: each of its ``trials`` trials must have ended, be one
    Tune trial with the same outcome, have exactly one MLflow child run under the search's one
    parent run (its ``raysearch.status`` the same outcome, nothing RUNNING, a finished trial's
    objective Optuna's value, each epoch logged once: all ``epochs`` for a finished trial), and
    appear once in the final summary with that outcome and value. Optuna's per-epoch values
    must be the run's, and no two trials may have sampled the very same values.
    """
    problems = []
    studied = {t["number"]: t for t in optuna_trials}
    if len(optuna_trials) != trials:
        problems.append(f"optuna: {len(optuna_trials)} trials in the study, not {trials}")
    expected = {}
    for number, trial in sorted(studied.items()):
        outcome = OUTCOME_OF_STATE.get(trial["state"])
        if outcome is None:
            problems.append(f"trial {number}: optuna state {trial['state']}, not ended")
        expected[number] = outcome
        if trial["state"] == "COMPLETE" and not trial["values"]:
            problems.append(f"trial {number}: optuna COMPLETE without a value")
    problems += _repeated_samples(optuna_trials)

    tuned = _by_number(tune_trials)
    for record in tuned.pop(None, []):
        problems.append(f"tune: trial {record['trial_id']} has no optuna number")
    for number, records in sorted(tuned.items()):
        if number not in studied:
            problems.append(f"trial {number}: in tune, not in optuna's study")
        if len(records) > 1:
            ids = ", ".join(r["trial_id"] for r in records)
            problems.append(f"trial {number}: {len(records)} tune trials ({ids})")
    for number, outcome in sorted(expected.items()):
        records = tuned.get(number, [])
        if not records:
            problems.append(f"trial {number}: no tune trial")
        state, value = studied[number]["state"], optuna_value(studied[number])
        for record in records:
            if tune_outcome(record) != outcome:
                problems.append(f"trial {number}: tune {tune_outcome(record)}, optuna {state}")
            if outcome == "finished" and not _same(record["value"], value):
                problems.append(
                    f"trial {number}: tune {OBJECTIVE} {record['value']}, optuna {value}"
                )

    problems += _mlflow_disagreements(studied, expected, parents, runs, epochs)
    problems += _summary_disagreements(studied, expected, summary, trials)
    return problems


def _repeated_samples(optuna_trials: list[dict]) -> list[str]:
    """Trials with the very same sampled values: the space samples a continuous learning rate,
    so an exact repeat is a sampler replaying its draws (its random state restored from
    before a trial it had already drawn), not chance."""
    first_with: dict[str, int] = {}
    problems = []
    for trial in sorted(optuna_trials, key=lambda t: t["number"]):
        if not trial.get("params"):
            continue
        key = json.dumps(trial["params"], sort_keys=True)
        if key in first_with:
            problems.append(
                f"trial {trial['number']}: sampled the same values as trial {first_with[key]}"
            )
        else:
            first_with[key] = trial["number"]
    return problems


def _mlflow_disagreements(studied, expected, parents, runs, epochs) -> list[str]:
    problems = []
    if len(parents) != 1:
        problems.append(f"mlflow: {len(parents)} parent runs of the search, not 1")
    for parent in parents:
        if parent["status"] != "FINISHED":
            problems.append(f"mlflow: parent run {parent['run_id']} is {parent['status']}")
    parent_ids = {parent["run_id"] for parent in parents}
    grouped = _by_number(runs)
    for run in grouped.pop(None, []):
        problems.append(f"mlflow: run {run['run_id']} has no optuna trial tag")
    for number in sorted(set(grouped) - set(studied)):
        problems.append(f"trial {number}: mlflow run(s) for a trial optuna does not have")
    for number, outcome in sorted(expected.items()):
        found = grouped.get(number, [])
        if len(found) != 1:
            ids = ", ".join(run["run_id"] for run in found) or "none"
            problems.append(f"trial {number}: {len(found)} mlflow runs, not 1 ({ids})")
        for run in found:
            problems += _run_disagreements(number, outcome, studied[number], run, parent_ids)
            problems += _epoch_disagreements(number, outcome, studied[number], run, epochs)
    return problems


def _run_disagreements(number, outcome, study_trial, run, parent_ids) -> list[str]:
    problems = []
    where = f"trial {number}: mlflow run {run['run_id']}"
    if run["parent"] not in parent_ids:
        problems.append(f"{where} is under parent {run['parent']}, not the search's")
    if run["status"] == "RUNNING":
        problems.append(f"{where} left RUNNING")
    if outcome is None:
        return problems
    if run["outcome"] != outcome:
        problems.append(f"{where} tagged {run['outcome']}, optuna {study_trial['state']}")
    if run["status"] not in ("RUNNING", RUN_STATUS_OF_OUTCOME[outcome]):
        problems.append(f"{where} is {run['status']}, not {RUN_STATUS_OF_OUTCOME[outcome]}")
    if outcome == "finished" and not _same(run["value"], optuna_value(study_trial)):
        problems.append(f"{where}: {OBJECTIVE} {run['value']}, optuna {optuna_value(study_trial)}")
    return problems


def _epoch_disagreements(number, outcome, study_trial, run, epochs) -> list[str]:
    problems = []
    where = f"trial {number}: mlflow run {run['run_id']}"
    steps = run["epoch_steps"]
    for step in sorted({s for s in steps if steps.count(s) > 1}):
        problems.append(f"{where}: epoch {step} logged {steps.count(step)} times")
    if outcome == "finished" and epochs is not None and sorted(set(steps)) != list(range(epochs)):
        problems.append(f"{where}: epochs {sorted(set(steps))} logged, not 0-{epochs - 1}")
    # Optuna's per-epoch values (step = epochs completed) are the run's (step = epoch index).
    logged = run.get("values_by_epoch", {})
    for step, value in sorted(study_trial.get("intermediate", {}).items()):
        if not _same(logged.get(step - 1), value):
            problems.append(
                f"{where}: {OBJECTIVE} after epoch {step} is {logged.get(step - 1)}, "
                f"optuna's intermediate value {value}"
            )
    return problems


def _summary_disagreements(studied, expected, summary, trials) -> list[str]:
    if summary is None:
        return ["summary: the last resume printed no --json summary"]
    problems = []
    if summary["interrupted"]:
        problems.append("summary: the search says it was interrupted")
    listed = _by_number(summary["trials"])
    if len(summary["trials"]) != trials:
        problems.append(f"summary: {len(summary['trials'])} trials, not {trials}")
    for number in sorted(set(listed) - set(studied)):
        problems.append(f"summary: trial {number} is not in optuna's study")
    for number, outcome in sorted(expected.items()):
        rows = listed.get(number, [])
        if len(rows) != 1:
            problems.append(f"summary: trial {number} listed {len(rows)} times")
        for row in rows:
            if row["status"] != outcome:
                problems.append(
                    f"summary: trial {number} {row['status']}, optuna {studied[number]['state']}"
                )
            elif outcome == "finished" and not _same(row["value"], optuna_value(studied[number])):
                problems.append(
                    f"summary: trial {number} {OBJECTIVE} {row['value']}, "
                    f"optuna {optuna_value(studied[number])}"
                )
    return problems


# -- the report --------------------------------------------------------------------------------


def _value(value) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else "-"


def trial_table(optuna_trials, tune_trials, runs, summary) -> list[str]:
    """One line per trial number: what each record says about it."""
    studied, tuned, logged = _by_number(optuna_trials), _by_number(tune_trials), _by_number(runs)
    listed = _by_number(summary["trials"]) if summary else {}
    numbers = sorted({n for n in (*studied, *tuned, *logged, *listed) if n is not None})
    lines = [
        f"{'trial':>5}  {'optuna':<9}{'value':>8}  {'tune':<10}{'runs':>5}  {'mlflow':<18}"
        f"{'value':>8}  {'epochs':<8}{'summary':<9}"
    ]
    for number in numbers:
        study = studied.get(number, [{}])[0]
        values = study.get("values") or [None]
        tune_text = ",".join(tune_outcome(t) for t in tuned.get(number, [])) or "-"
        found = logged.get(number, [])
        run = found[0] if found else {}
        run_text = f"{run.get('outcome')}/{run.get('status')}" if run else "-"
        epochs = ",".join(str(s) for s in run.get("epoch_steps", [])) or "-"
        listed_text = ",".join(row["status"] for row in listed.get(number, [])) or "-"
        lines.append(
            f"{number:>5}  {study.get('state', '-'):<9}{_value(values[0]):>8}  {tune_text:<10}"
            f"{len(found):>5}  {run_text:<18}{_value(run.get('value')):>8}  {epochs:<8}"
            f"{listed_text:<9}"
        )
    return lines


def postponed(kill: dict) -> str:
    if kill["postponed_s"] < 0.05:
        return ""
    return f", +{kill['postponed_s']:.1f} s until Tune's state existed"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="draws the kill moments (and TPE)")
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=None, help="default: a new temp folder")
    parser.add_argument("--min-delay", type=float, default=10.0, help="seconds after a launch")
    parser.add_argument("--max-delay", type=float, default=60.0)
    parser.add_argument(
        "--train-size", type=int, default=6144, help="images per epoch (sets the search's length)"
    )
    parser.add_argument("--timeout", type=float, default=3600.0, help="for the last resume")
    parser.add_argument(
        "--check-only",
        action="store_true",
        help="only compare the records of the run already in --workdir (kill nothing)",
    )
    args = parser.parse_args(argv)
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="chaos-search-"))).resolve()
    record = workdir / "chaos.json"
    if args.check_only:
        if not record.is_file():
            parser.error(f"--check-only needs a --workdir with a chaos.json ({record} is missing)")
        outcome = json.loads(record.read_text())
    else:
        workdir.mkdir(parents=True, exist_ok=True)
        if (workdir / "ray_results" / "searches" / SEARCH).exists():
            parser.error(f"{workdir} already holds a search {SEARCH!r}: give a new --workdir")
        space = write_space(workdir, args.seed, args.train_size)
        print(f"work folder {workdir} (driver.log, summary.json, chaos.json, stores)", flush=True)
        print(
            f"{TRIALS} trials of {args.train_size} images x {EPOCHS} epochs; {args.kills} kills, "
            f"each {args.min_delay:g}-{args.max_delay:g} s after a launch (seed {args.seed})",
            flush=True,
        )
        started = time.monotonic()
        outcome = run_with_kills(space, workdir, random.Random(args.seed), args)
        outcome["wall_s"] = time.monotonic() - started
        record.write_text(json.dumps(outcome, indent=2))
    return report(workdir, outcome)


def report(workdir: Path, outcome: dict) -> int:
    """Print the kills, the trials in each record and the verdict; 0 when they agree."""
    for kill in outcome["kills"]:
        print(
            f"kill {kill['kill']}: {kill['after_launch_s']:5.1f} s after its launch (drawn "
            f"{kill['planned_s']:.1f}{postponed(kill)}), {kill['since_start_s']:6.1f} s in; "
            f"Ray gone {kill['session_s']:.1f} s later; last line: {kill['doing']!r}"
        )
    for note in outcome["notes"]:
        print(f"note: {note}")
    summary = summary_records(outcome["summary"])
    storage = (outcome["summary"] or {}).get("study", {}).get("storage")
    optuna_trials = optuna_records(storage or f"sqlite:///{workdir / 'optuna.db'}")
    tune_trials = tune_records(workdir / "ray_results" / "searches" / SEARCH / "tune")
    parents, runs = mlflow_records(f"sqlite:///{workdir / 'mlflow.db'}")
    print()
    print("\n".join(trial_table(optuna_trials, tune_trials, runs, summary)))
    states = [OUTCOME_OF_STATE.get(t["state"], t["state"]) for t in optuna_trials]
    tally = ", ".join(f"{states.count(s)} {s}" for s in dict.fromkeys(sorted(states)))
    print(f"\ntrials by status (optuna): {tally}")
    problems = outcome["problems"] + disagreements(
        optuna_trials, tune_trials, parents, runs, summary, trials=TRIALS, epochs=EPOCHS
    )
    print(f"wall time {outcome['wall_s']:.0f} s, {len(outcome['kills'])} kills")
    if problems:
        print(f"verdict: {len(problems)} disagreement(s)")
        for problem in problems:
            print(f"  - {problem}")
        return 1
    print("verdict: Optuna, Tune, MLflow and the summary agree")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
