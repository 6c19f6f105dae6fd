"""Parent tables (YAML, JSON, CSV, Parquet) and exact save/load round trips of trees and forests."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trainables.data.embedded_taxonomy import LEAVES, TREES
from trainables.errors import UserInputError
from trainables.hierarchy import ClassTree, Forest, load, read_parent_table, save
from trainables.hierarchy.tree_dicts import FOREST_FORMAT, TREE_FORMAT

# A "billion laughs": ten times ten ... nine levels of aliases, 10**10 strings once expanded.
BOMB = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]\n" for i in range(1, 10)
)

UNBALANCED = {"a": "Y", "b": "Y", "Y": "X", "c": "X", "X": "R", "d": "R", "R": "Top"}


@pytest.fixture(scope="module")
def forest() -> Forest:
    return Forest(
        ClassTree.from_parents(name, table, leaves=LEAVES) for name, table in TREES.items()
    )


def _trees(forest: Forest) -> list[ClassTree]:
    unbalanced = ClassTree.from_parents("unbalanced", UNBALANCED, labels={"X": "ex", "R": "root"})
    labelled = ClassTree.from_parents(
        "imagenet-like",
        {"n01": "n10", "n02": "n10", "n03": "n11", "n04": "n11"},
        labels={"n01": "crane", "n03": "crane", "n10": "bird, fowl", "n11": "machine"},
    )
    return [*forest.trees, forest["form"].cut(1), unbalanced, unbalanced.cut(1), labelled]


@pytest.mark.parametrize("suffix", [".json", ".parquet"])
def test_trees_round_trip_exactly(tmp_path, forest, suffix):
    for i, tree in enumerate(_trees(forest)):
        path = save(tree, tmp_path / f"tree{i}{suffix}")
        loaded = load(path)
        assert isinstance(loaded, ClassTree)
        assert loaded == tree
        assert loaded.labels == tree.labels and loaded.root == tree.root
        assert loaded.leaf_index.equal(tree.leaf_index)


@pytest.mark.parametrize("suffix", [".json", ".parquet"])
def test_forests_round_trip_exactly(tmp_path, forest, suffix):
    selected = forest.select(["corners", "form"], depths={"form": 2})
    for i, item in enumerate([forest, selected]):
        loaded = load(save(item, tmp_path / f"forest{i}{suffix}"))
        assert isinstance(loaded, Forest)
        assert loaded == item and loaded.names == item.names


def test_saved_formats(tmp_path, forest):
    tree = forest["symmetry"]
    data = json.loads(save(tree, tmp_path / "t.json").read_text())
    assert data["format"] == TREE_FORMAT
    assert set(data) == {"format", "name", "leaves", "parents", "labels", "depth"}
    assert json.loads(save(forest, tmp_path / "f.json").read_text())["format"] == FOREST_FORMAT
    table = pq.read_table(save(tree, tmp_path / "t.parquet"))
    assert table.column_names == ["child", "parent", "label", "leaf_index"]
    assert table.num_rows == 20 + 4 + 2  # one row per node
    metadata = {k.decode(): v.decode() for k, v in table.schema.metadata.items()}
    assert metadata["format"] == TREE_FORMAT
    assert (metadata["name"], metadata["depth"]) == ("symmetry", "2")


def _write_tables(tmp_path, table: dict[str, str]) -> list:
    yaml_path = tmp_path / "shapes.yaml"
    yaml_path.write_text("".join(f"{child}: {parent}\n" for child, parent in table.items()))
    json_path = tmp_path / "shapes.json"
    json_path.write_text(json.dumps([[child, parent] for child, parent in table.items()]))
    csv_path = tmp_path / "shapes.csv"
    csv_path.write_text("child,parent\n" + "".join(f"{c},{p}\n" for c, p in table.items()))
    parquet_path = tmp_path / "shapes.parquet"
    pq.write_table(pa.table({"child": list(table), "parent": list(table.values())}), parquet_path)
    return [yaml_path, json_path, csv_path, parquet_path]


def test_plain_tables_give_the_same_tree(tmp_path, forest):
    form = forest["form"]
    for path in _write_tables(tmp_path, TREES["form"]):
        assert read_parent_table(path) == list(TREES["form"].items())
        tree = load(path, leaves=LEAVES)
        assert tree == form.renamed("shapes")
        assert load(path, leaves=LEAVES, name="form", depth=2) == form.cut(2)
        # Without a class list, leaves are the nodes that are never parents, in table order.
        assert load(path).leaves == tuple(c for c in TREES["form"] if c in LEAVES)


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("empty.yaml", "", "the file is empty"),
        ("comments.yaml", "# nothing\n", "the file is empty"),
        ("empty.csv", "\n", "the file is empty"),
        ("empty.json", "  ", "the file is empty"),
        ("header.csv", "child,parent\n", "the table is empty"),
        ("bad.yaml", "a: [b\n", "not valid YAML"),
        ("bomb.yaml", BOMB, "must be YAML that expands to at most 100,000 nodes"),
        ("deep.yaml", "a: " + "[" * 20_000 + "]" * 20_000 + "\n", "must be YAML nested at most"),
        ("bad.json", "{'a': 'b'}", "not valid JSON"),
        ("shape.yaml", "- a\n- b\n", "every item must be a (child, parent) pair"),
        ("number.json", "3", "must hold a mapping of child to parent"),
        ("nested.yaml", "a: {b: c}\n", "child and parent must be non-empty names"),
        ("twice.yaml", "a: X\nb: X\na: Y\n", "child `a` is listed twice with different parents"),
        ("again.yaml", "a: X\nb: X\na: X\n", "child `a` is listed twice (line 3)"),
        ("twice.json", '{"a": "X", "b": "X", "a": "Y"}', "child `a` is listed twice"),
        ("twice.csv", "child,parent\na,X\nb,X\na,Y\n", "child `a` is listed twice"),
        ("header.csv", "kid,parent\na,X\n", "the header must be child,parent"),
        ("row.csv", "child,parent\na,X,Z\n", "row 2 must be two non-empty fields"),
        ("cycle.csv", "child,parent\nleaf,A\nA,B\nB,A\n", "cycle: A -> B -> A"),
        ("format.json", '{"format": "raysearch.tree/9"}', "`format` must be raysearch.tree/1"),
        ("fields.json", '{"format": "raysearch.tree/1", "name": "t"}', "`leaves` is missing"),
        (
            "types.json",
            '{"format": "raysearch.tree/1", "name": "t", "leaves": "ab", "parents": {}}',
            "`leaves` must be a list of strings",
        ),
    ],
)
def test_malformed_files(tmp_path, name, content, fragment):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(UserInputError) as caught:
        load(path)
    message = str(caught.value)
    assert fragment in message, message
    assert str(path) in message and "\n" not in message


def test_malformed_parquet(tmp_path):
    empty = tmp_path / "empty.parquet"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"not parquet at all")
    columns = tmp_path / "columns.parquet"
    pq.write_table(pa.table({"kid": ["a"], "parent": ["X"]}), columns)
    numbers = tmp_path / "numbers.parquet"
    pq.write_table(pa.table({"child": [1, 2], "parent": [3, 3]}), numbers)
    nulls = tmp_path / "nulls.parquet"
    pq.write_table(pa.table({"child": ["a", "b"], "parent": ["X", None]}), nulls)
    cases = {
        empty: "the file is empty",
        garbage: "not a readable Parquet file",
        columns: "a column `child` is required",
        numbers: "must hold strings",
        nulls: "column `parent` is empty in row 1",
    }
    for path, fragment in cases.items():
        with pytest.raises(UserInputError) as caught:
            load(path)
        assert fragment in str(caught.value) and str(path) in str(caught.value)
        assert "\n" not in str(caught.value)


def test_missing_and_unsupported_files(tmp_path, forest):
    with pytest.raises(UserInputError, match="`file` must be an existing file"):
        load(tmp_path / "absent.yaml")
    (tmp_path / "tree.txt").write_text("a: b\n")
    with pytest.raises(UserInputError, match="`file` must be a .yaml"):
        load(tmp_path / "tree.txt")
    with pytest.raises(UserInputError, match="`output` must be a .json or .parquet file"):
        save(forest, tmp_path / "forest.yaml")


def test_dataset_classes_are_checked(tmp_path, forest):
    saved = save(forest["form"], tmp_path / "form.json")
    with pytest.raises(UserInputError, match="`circle`.*only in the given classes"):
        load(saved, leaves=[leaf for leaf in LEAVES if leaf != "circle"] + ["blob"])
    extra = dict(TREES["form"], blob="oval")
    yaml_path = tmp_path / "extra.yaml"
    yaml_path.write_text("".join(f"{c}: {p}\n" for c, p in extra.items()))
    with pytest.raises(UserInputError, match="node `blob`.*not a class of the dataset"):
        load(yaml_path, leaves=LEAVES)
    missing = {c: p for c, p in TREES["form"].items() if c != "hexagon"}
    yaml_path.write_text("".join(f"{c}: {p}\n" for c, p in missing.items()))
    with pytest.raises(UserInputError, match="leaf `hexagon` has no path to the root"):
        load(yaml_path, leaves=LEAVES)


def test_parquet_schema_metadata_that_is_not_text_or_names_no_string_is_one_line(tmp_path):
    columns = {"child": ["a"], "parent": ["A"], "label": ["a"], "leaf_index": [0], "tree": ["x"]}
    not_text = tmp_path / "not_text.parquet"
    pq.write_table(pa.table(columns).replace_schema_metadata({b"format": b"\xff\xfe"}), not_text)
    listed = tmp_path / "listed.parquet"
    trees = json.dumps([{"name": ["x"], "depth": 1}]).encode()
    metadata = {b"format": FOREST_FORMAT.encode(), b"trees": trees}
    pq.write_table(pa.table(columns).replace_schema_metadata(metadata), listed)
    for path, reason in [(not_text, "not UTF-8 text"), (listed, "must list {name, depth}")]:
        with pytest.raises(UserInputError) as caught:
            load(path)
        assert str(caught.value).startswith(f"{path}: ") and reason in str(caught.value)
