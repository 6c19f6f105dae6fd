"""The comparison's numbers and verdicts: a run's table columns, means with Student-t intervals
over seeds, differences paired by seed, and the paper's claims judged on them."""

from __future__ import annotations

import math


def table_columns(row: dict) -> dict[str, float]:
    """Flatten one row into the comparison table's columns (all test split)."""
    profile = row["profile"] if "profile" in row else row
    columns = {"clean leaf": profile["clean_leaf"], "robust leaf": profile["robust_leaf"]}
    for tree, levels in profile["superclass_attacks"].items():
        for level, cell in levels.items():
            columns[f"{tree}/{level} level"] = cell["level"]
            columns[f"{tree}/{level} leaf"] = cell["leaf"]
    columns["transfer"] = profile["transfer"]
    zero_shot = row.get("zeroshot") if "profile" in row else None
    if zero_shot is not None:
        columns["zeroshot clean"] = zero_shot["average"]["clean"]
        columns["zeroshot robust"] = zero_shot["average"]["robust"]
        for name, result in zero_shot["datasets"].items():
            columns[f"{name} clean"] = result["clean"]
            columns[f"{name} robust"] = result["robust"]
    if "train" in row:
        columns["train seconds"] = row["train"]["seconds"]
    return columns


def t_quantile(confidence: float, dof: int) -> float:
    """Two-sided Student-t quantile, e.g. 2.776 for 95% and 4 degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(0.5 + confidence / 2, dof))


def interval(values: list[float], confidence: float = 0.95) -> dict[str, float]:
    """Mean, sample standard deviation and the ``confidence`` interval's half-width (Student t).

    With one value the half-width is NaN: one seed says nothing about the spread.
    """
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return {"mean": mean, "std": float("nan"), "ci95": float("nan"), "n": n}
    std = math.sqrt(sum((value - mean) ** 2 for value in values) / (n - 1))
    return {
        "mean": mean,
        "std": std,
        "ci95": t_quantile(confidence, n - 1) * std / math.sqrt(n),
        "n": n,
    }


def summarise(rows: list[dict]) -> dict[str, dict[str, dict[str, float]]]:
    """Per method and column: mean, sample std and 95% interval half-width over seeds."""
    by_method: dict[str, list[dict[str, float]]] = {}
    for row in rows:
        by_method.setdefault(row["method"], []).append(table_columns(row))
    return {
        method: {key: interval([c[key] for c in columns]) for key in columns[0]}
        for method, columns in by_method.items()
    }


def paired_difference(rows: list[dict], a: str, b: str, column: str) -> dict[str, float] | None:
    """``a - b`` on ``column``, paired by seed (same data order and attack starts), with its
    95% interval; None when either method is missing."""
    values = {}
    for row in rows:
        values.setdefault(row["method"], {})[row["seed"]] = table_columns(row).get(column)
    if a not in values or b not in values:
        return None
    seeds = sorted(set(values[a]) & set(values[b]))
    if not seeds or any(values[m][s] is None for m in (a, b) for s in seeds):
        return None
    return interval([values[a][s] - values[b][s] for s in seeds])


def _verdict(difference: dict | None, *, want: str) -> str:
    """ "holds" / "contradicted" / "not resolved" for a claimed sign of a paired difference.

    ``want`` is ``"positive"`` (a > b), ``"negative"`` (a < b) or ``"not negative"`` (a >= b,
    "at least as good": holds unless the interval lies wholly below zero).
    """
    if difference is None:
        return "not measured"
    low = difference["mean"] - difference["ci95"]
    high = difference["mean"] + difference["ci95"]
    if math.isnan(low):  # one seed: the sign of the mean only
        low = high = difference["mean"]
    if want == "not negative":
        return "contradicted" if high < 0 else "holds"
    if want == "negative":
        low, high = -high, -low
    if low > 0:
        return "holds"
    if high < 0:
        return "contradicted"
    return "not resolved (the 95% interval includes 0)"


def claims(rows: list[dict], summary: dict) -> list[dict]:
    """The paper's claims (a)-(e), each with its verdict and the numbers it rests on."""

    def stat(method: str, column: str):
        return summary.get(method, {}).get(column)

    def diff(a, b, column, want):
        d = paired_difference(rows, a, b, column)
        return {
            "a": a,
            "b": b,
            "column": column,
            "difference": d,
            "verdict": _verdict(d, want=want),
        }

    out = []
    clip_clean, clip_robust = stat("clip", "zeroshot clean"), stat("clip", "zeroshot robust")
    if clip_clean and clip_robust:
        ratio = clip_robust["mean"] / max(clip_clean["mean"], 1e-9)
        out.append(
            {
                "claim": "(a) CLIP collapses under attack on the zero-shot suite",
                "test": "CLIP's zero-shot robust accuracy below half its clean accuracy",
                "numbers": {"clean": clip_clean, "robust": clip_robust, "ratio": ratio},
                "verdict": "holds" if ratio < 0.5 else "contradicted",
            }
        )
    out.append(
        {
            "claim": "(b) TeCoA loses zero-shot clean accuracy relative to CLIP",
            "comparisons": [diff("tecoa", "clip", "zeroshot clean", "negative")],
        }
    )
    out.append(
        {
            "claim": "(c) the method loses less zero-shot clean accuracy and is more robust on "
            "the suite than TeCoA",
            "comparisons": [
                diff("hrz-forest", "tecoa", "zeroshot clean", "positive"),
                diff("hrz-forest", "tecoa", "zeroshot robust", "positive"),
                diff("hrz", "tecoa", "zeroshot clean", "positive"),
                diff("hrz", "tecoa", "zeroshot robust", "positive"),
            ],
        }
    )
    out.append(
        {
            "claim": "(d) the forest is at least as good as one tree",
            "comparisons": [
                diff("hrz-forest", "hrz", column, "not negative")
                for column in ("clean leaf", "robust leaf", "zeroshot clean", "zeroshot robust")
            ],
        }
    )
    strategies = {
        "universal": "hrz-forest",
        "leaf": "hrz-forest/leaf-attack",
        "per_level": "hrz-forest/per-level-attack",
    }
    cost = {
        key: {
            "robust leaf": stat(name, "robust leaf"),
            "zeroshot robust": stat(name, "zeroshot robust"),
            "train seconds": stat(name, "train seconds"),
        }
        for key, name in strategies.items()
        if name in summary
    }
    comparisons = [
        diff(strategies["universal"], strategies[other], column, "not negative")
        for other in ("leaf", "per_level")
        for column in ("robust leaf", "zeroshot robust")
    ]
    comparisons.append(
        diff(strategies["universal"], strategies["per_level"], "train seconds", "negative")
    )
    out.append(
        {
            "claim": "(e) the universal perturbation gives the best robustness per training cost "
            "among the three strategies",
            "numbers": cost,
            "comparisons": comparisons,
        }
    )
    for claim in out:
        if "verdict" not in claim:
            verdicts = [c["verdict"] for c in claim["comparisons"]]
            if any(v == "not measured" for v in verdicts):
                claim["verdict"] = "not measured (a method is missing)"
            elif all(v == "holds" for v in verdicts):
                claim["verdict"] = "holds"
            elif any(v == "contradicted" for v in verdicts):
                claim["verdict"] = "contradicted"
            else:
                claim["verdict"] = "not resolved"
    return out
