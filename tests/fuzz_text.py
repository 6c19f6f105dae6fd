"""Hypothesis strategies for untrusted text: YAML, JSON and CSV built from their own pieces.

Random unicode rarely parses, so it only reaches the first line of a parser. These strategies
compose real syntax (keys of the project's files, tagged and odd scalars, anchors and aliases,
flow collections, ``?`` complex keys, merge keys, byte order marks, deep nesting, huge numbers)
so that examples get through the parser and into the checks behind it.
"""

from __future__ import annotations

import json
from datetime import timedelta

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

#: Keys that the project's files use, so that fuzzed documents reach the code behind the parser.
#: Generated examples run under this deadline each: a parser never stalls on what it refuses.
DEADLINE = timedelta(seconds=2)


def fuzz_settings(examples: int) -> settings:
    """The fuzz tests' profile: the same examples on every run and no example database."""
    return settings(
        max_examples=examples,
        deadline=DEADLINE,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


KEYS = (
    "name", "seed", "method", "head", "loss", "attack", "optim", "evaluation", "data", "model",
    "scaling", "checkpoint", "mlflow", "lr", "epochs", "batch_size", "eps", "steps", "trees",
    "depths", "templates", "dataset", "workers", "margins", "shape", "kappa", "pretrained",
    "base", "overrides", "objective", "metric", "mode", "budget", "trials", "space", "type",
    "low", "high", "step", "log", "choices", "value", "when", "of", "min", "max", "per_tree",
    "child", "parent", "format", "leaves", "parents", "labels", "depth",
    "form", "corners", "symmetry", "a", "b", "<<", "1", "null", "~", "true", "'q'", '"k"',
)  # fmt: skip
SCALARS = (
    "0", "-1", "1", "2", "3", "1e-3", "1e999", "-.inf", ".nan", "0x1F", "0o17", "0b101",
    "1_000", "null", "~", "true", "no", "On", "'x'", '"\\u263a\\n"', '"\\x00"', "''",
    "2001-12-14", "2020-13-45", "2001-12-14t21:59:43.10-05:00", "1:30:00", "190:20:30.15",
    "!!binary aGVsbG8=", "!!binary '###'", "!!str 5", "!!int x", "!!float y", "!!bool 3",
    "!!null a", "!!set {a, b}", "!!omap [a: 1, b: 2]", "!!pairs [a: 1]", "!!timestamp 2001",
    "!!python/object/apply:os.system ['true']", "!!python/name:os.system ''", "!custom 1",
    "embedded", "hrz", "hrz-forest", "robust_leaf", "max", "float", "int", "categorical",
    "fixed", "subset", "form", "corners", "raysearch.tree/1", "raysearch.forest/1",
    "optim.lr=1", "|\n  block\n", ">-\n  folded\n", "\t", "%", "@", "`", "*undefined",
    "9" * 4400, "1" + ":0" * 200, "-" * 3, "...", "[", "]", "{", "}",
)  # fmt: skip
ANCHORS = ("a", "b", "c")


def _identifiers() -> st.SearchStrategy[str]:
    return st.text(alphabet="abcdefghijklmnopqrstuvwxyz_.0123456789-", min_size=1, max_size=12)


def yaml_keys() -> st.SearchStrategy[str]:
    return st.sampled_from(KEYS) | _identifiers()


def yaml_scalars() -> st.SearchStrategy[str]:
    return (
        st.sampled_from(SCALARS)
        | st.integers(-(10**30), 10**30).map(str)
        | st.floats(allow_nan=True, allow_infinity=True).map(repr)
        | _identifiers()
        | st.sampled_from(ANCHORS).map(lambda name: f"*{name}")
    )


def _flow(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    pair = st.tuples(yaml_keys(), children).map(lambda kv: f"{kv[0]}: {kv[1]}")
    complex_pair = st.tuples(children, children).map(lambda kv: f"? {kv[0]} : {kv[1]}")
    return (
        st.lists(children, max_size=4).map(lambda items: "[" + ", ".join(items) + "]")
        | st.lists(pair | complex_pair, max_size=4).map(lambda items: "{" + ", ".join(items) + "}")
        | st.tuples(st.sampled_from(ANCHORS), children).map(lambda a: f"&{a[0]} {a[1]}")
        | children.map(lambda value: f"{{<<: {value}, a: 1}}")
    )


def yaml_values() -> st.SearchStrategy[str]:
    """One YAML value in flow style: scalars, collections, anchors, aliases, complex keys."""
    return st.recursive(yaml_scalars(), _flow, max_leaves=12)


def deep_nesting() -> st.SearchStrategy[str]:
    """Lists or mappings nested up to thousands of levels deep, balanced or not."""
    return st.tuples(
        st.sampled_from([("[", "]"), ("{a: ", "}"), ("{? ", ": 1}"), ('{"a": ', "}")]),
        st.integers(1, 6_000),
        st.booleans(),
    ).map(lambda d: d[0][0] * d[1] + "1" + d[0][1] * (d[1] if d[2] else d[1] // 2))


def _block(keys: st.SearchStrategy[str], values: st.SearchStrategy[str]) -> st.SearchStrategy:
    line = st.tuples(keys, st.sampled_from(["", "&a ", "&b ", "!!map ", "!!seq "]), values)
    return st.lists(line, max_size=6).map(
        lambda lines: "".join(f"{key}: {tag}{value}\n" for key, tag, value in lines)
    )


def yaml_documents() -> st.SearchStrategy[str]:
    """Whole YAML files: block mappings, flow values, deep nesting, prefixes and suffixes."""
    values = yaml_values()
    body = (
        _block(yaml_keys(), values)
        | values
        | deep_nesting()
        | st.lists(values, max_size=5).map(lambda items: "".join(f"- {v}\n" for v in items))
        | _block(yaml_keys(), values).map(lambda text: "? [a, b]\n: 1\n" + text)
        | st.text(max_size=80)
    )
    prefix = st.sampled_from(["", "\ufeff", "---\n", "%YAML 1.1\n---\n", "# c\n", "\ufeff\ufeff"])
    suffix = st.sampled_from(["", "\n", "\n---\nx: 1\n", "\t\n", "...\n", "\r\n", "\0"])
    return st.tuples(prefix, body, suffix).map("".join)


def json_values() -> st.SearchStrategy:
    return st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), children, max_size=4)
        ),
        max_leaves=15,
    )


def json_documents() -> st.SearchStrategy[str]:
    """Whole JSON files: dumped values, saved-tree shapes, repeated keys, deep nesting."""
    tree = st.fixed_dictionaries(
        {"format": st.sampled_from(["raysearch.tree/1", "raysearch.forest/1", "x"])},
        optional={
            "name": json_values(),
            "leaves": json_values(),
            "parents": json_values(),
            "labels": json_values(),
            "depth": json_values(),
            "trees": st.lists(json_values(), max_size=3),
        },
    )
    body = (
        json_values().map(json.dumps)
        | tree.map(json.dumps)
        | deep_nesting()
        | st.just('{"a": "X", "a": "Y"}')
        | st.just("1" * 5_000)
        | st.just("[NaN, Infinity, -Infinity]")
        | st.text(max_size=60)
    )
    return st.tuples(st.sampled_from(["", "\ufeff", " "]), body).map("".join)


def csv_documents() -> st.SearchStrategy[str]:
    """Whole CSV files: quoted cells, separators in cells, stray carriage returns, long fields."""
    cell = (
        st.sampled_from(["child", "parent", "a", "b", "", " ", '"q,uoted"', '"a""b"', '"', "\r"])
        | _identifiers()
        | st.just("x" * 140_000)
    )
    row = st.lists(cell, min_size=0, max_size=4).map(",".join)
    header = st.sampled_from(["child,parent", "\ufeffchild,parent", "kid,parent", ""])
    return st.tuples(header, st.lists(row, max_size=6)).map(
        lambda hr: "\n".join([hr[0], *hr[1]]) + "\n"
    )
