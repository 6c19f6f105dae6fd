"""The demo's search (search_spaces/demo.yaml) the way its trials ran before and run now.

    python bench/demo_search.py

One run, same machine, same base model, each on a fresh local Ray (``ray.init`` not counted):

1. **before**: every trial a Ray Train job on a worker group, with Ray Train's default 2 s
   controller poll (``scaling.in_process=false``, ``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S=2``);
2. **now**: the demo as ``make demo`` runs it (one-worker trials in their own process, the
   next trial in the process of the last).

The MLflow stores and checkpoints go to a temporary folder. Prints each search's wall time,
its trials by outcome, and the ratio.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"


PATHS = (
    ("before: worker group, 2 s poll", "2.0", ["scaling.in_process=false"]),
    ("now: make demo", None, []),
)


def main(only_before: bool = False) -> int:
    import ray

    from raysearch.runtime import TRAIN_POLL_VARIABLE, start_local_ray
    from raysearch.search import launch
    from raysearch.spaces import load_space
    from trainables.pretrain import load_or_pretrain_base

    load_or_pretrain_base()  # built once, outside both timings
    demo = (SPACES / "demo.yaml").read_text()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for label, poll, extra in PATHS[: 1 if only_before else None]:
            if poll is None:
                os.environ.pop(TRAIN_POLL_VARIABLE, None)
            else:
                os.environ[TRAIN_POLL_VARIABLE] = poll
            folder = Path(scratch) / label.split(":")[0]
            stores = [
                f"checkpoint.storage_path={folder / 'ray_results'}",
                f"mlflow.tracking_uri=sqlite:///{folder / 'mlflow.db'}",
            ]
            # The demo's file with more overrides first in its list, beside the original (its
            # base is found relative to it).
            added = "".join(f"  - {override}\n" for override in [*stores, *extra])
            path = SPACES / f".bench-demo-{os.getpid()}-{len(rows)}.yaml"
            path.write_text(demo.replace("overrides:\n", "overrides:\n" + added, 1))
            try:
                space = load_space(path)
            finally:
                path.unlink()
            start_local_ray(os.cpu_count() or 1, 64, log_to_driver=False)
            started = time.perf_counter()
            result = launch(space, name="demo", out=lambda line: None)
            seconds = time.perf_counter() - started
            ray.shutdown()
            for row in result.rows:
                if row.status == "failed":
                    print(f"  {label}: trial {row.number} failed: {row.error}")
            outcomes = [row.status for row in result.rows]
            counts = {status: outcomes.count(status) for status in dict.fromkeys(outcomes)}
            rows.append((label, seconds, counts))

    for label, seconds, counts in rows:
        tally = ", ".join(f"{n} {status}" for status, n in counts.items())
        print(f"  {label:<34}{seconds:7.1f} s   ({tally})")
    print(f"  now / before                      {rows[1][1] / rows[0][1]:7.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
