"""`raysearch trees show | validate | build`, run in-process through ``main``."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raysearch.cli import main
from trainables.data.class_lists import dataset_classes
from trainables.data.embedded_taxonomy import LEAVES, TREES
from trainables.hierarchy import ClassTree, load, load_shipped
from trainables.hierarchy import wordnet as wn_module
from trainables.hierarchy.shipped import SHIPPED, TREES_DIR

DATABASE = Path("/usr/share/wordnet")
needs_wordnet = pytest.mark.skipif(
    not (DATABASE / "data.noun").is_file(), reason="WordNet 3.0 (wordnet-base) is not installed"
)


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    """WordNet layouts go to a private cache, and only the database folder is used."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAYSEARCH_CACHE", str(tmp_path_factory.mktemp("cache")))
        patch.delenv(wn_module.WORDNET_ENV, raising=False)
        yield


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write_yaml(path: Path, table: dict[str, str]) -> Path:
    path.write_text("".join(f"{child}: {parent}\n" for child, parent in table.items()))
    return path


# -- show ---------------------------------------------------------------------------------------


def test_show_prints_an_indented_tree(capsys):
    code, out, err = run(capsys, "trees", "show", "embedded", "--tree", "form")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "tree `form`: 20 leaves, depth 3, level sizes 20/8/3/2"
    assert lines[1:5] == ["  plain figure", "    curved shape", "      oval", "        circle"]
    assert "  glyph" in lines and "        chevron" in lines
    assert sum(1 for line in lines if line.startswith("        ")) == 20  # every leaf once


def test_show_json_for_a_tree_and_a_forest(capsys):
    code, out, _ = run(capsys, "trees", "show", "embedded/symmetry", "--json")
    data = json.loads(out)
    assert code == 0
    assert data["name"] == "symmetry" and data["depth"] == 2 and data["leaves"] == list(LEAVES)
    assert data["levels"] == [
        [
            "round symmetric shape",
            "two-fold symmetric shape",
            "mirror symmetric shape",
            "many-fold symmetric shape",
        ],
        ["highly symmetric shape", "weakly symmetric shape"],
    ]
    code, out, _ = run(capsys, "trees", "show", str(TREES_DIR / SHIPPED["embedded"]), "--json")
    assert [tree["name"] for tree in json.loads(out)] == ["form", "symmetry", "corners"]
    code, out, _ = run(capsys, "trees", "show", "imagenet1k-wordnet", "--json")
    data = json.loads(out)
    assert len(data["leaves"]) == 1000 and len(data["levels"]) == 5
    assert [len(level) for level in data["levels"]] == list(
        load_shipped("imagenet1k-wordnet").level_sizes[1:]
    )


# -- validate -------------------------------------------------------------------------------------


def test_validate_prints_one_ok_line(capsys, tmp_path):
    path = write_yaml(tmp_path / "form.yaml", TREES["form"])
    code, out, err = run(capsys, "trees", "validate", str(path), "--dataset", "embedded")
    assert (code, err) == (0, "")
    assert out == f"OK {path}: tree `form`: 20 leaves, depth 3, level sizes 20/8/3/2\n"
    shipped = str(TREES_DIR / SHIPPED["embedded"])
    code, out, _ = run(capsys, "trees", "validate", shipped, "--dataset", "embedded")
    assert code == 0 and out.count("\n") == 1
    assert "forest of 3 trees over 20 leaves: form (depth 3, 20/8/3/2)" in out


# -- build ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".json", ".parquet"])
def test_build_table(capsys, tmp_path, suffix):
    source = write_yaml(tmp_path / "form.yaml", TREES["form"])
    out_path = tmp_path / f"out{suffix}"
    code, out, err = run(
        capsys, "trees", "build", "table", str(source), "--name", "shapes",
        "--dataset", "embedded", "--depth", "2", "-o", str(out_path),
    )  # fmt: skip
    assert (code, err) == (0, "")
    assert out.startswith(f"wrote {out_path}: tree `shapes`")
    expected = ClassTree.from_parents("shapes", TREES["form"], leaves=LEAVES, depth=2)
    assert load(out_path) == expected


def test_build_refuses_to_replace_a_file_without_force(capsys, tmp_path):
    source = write_yaml(tmp_path / "form.yaml", TREES["form"])
    out_path = tmp_path / "out.json"
    out_path.write_text("keep me")
    argv = ["trees", "build", "table", str(source), "-o", str(out_path)]
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert err == (
        f"raysearch: error: `--output` must be a new file (add --force to replace it), but got "
        f"'{out_path}'.\n"
    )
    assert out_path.read_text() == "keep me"
    code, out, err = run(capsys, *argv, "--force")
    assert (code, err) == (0, "")
    assert load(out_path).name == "form"


def test_build_coarse_matches_the_shipped_file(capsys, tmp_path):
    out_path = tmp_path / "coarse.json"
    code, _, _ = run(
        capsys, "trees", "build", "coarse", "--dataset", "cifar100", "-o", str(out_path)
    )
    assert code == 0
    assert out_path.read_bytes() == (TREES_DIR / SHIPPED["cifar100-coarse"]).read_bytes()


@needs_wordnet
def test_build_wordnet_from_ids_and_datasets(capsys, tmp_path):
    ids = tmp_path / "pets.txt"
    ids.write_text("# pets\nn02119789\nArctic fox\ngolden_retriever\nbig = tiger.n.02\nlion\n")
    out_path = tmp_path / "pets.json"
    code, out, err = run(
        capsys, "trees", "build", "wordnet", "--ids", str(ids), "-o", str(out_path)
    )
    assert (code, err) == (0, "")
    tree = load(out_path)
    assert tree.name == "pets"
    assert tree.leaves == ("n02119789", "Arctic fox", "golden_retriever", "big", "lion")
    assert tree.labels["n02119789"] == "kit fox" and tree.labels["big"] == "big"
    assert [tree.labels[node] for node in tree.path("big")] == ["big", "big", "big cat"]
    out_path = tmp_path / "cifar10.parquet"
    code, _, _ = run(
        capsys, "trees", "build", "wordnet", "--dataset", "cifar10",
        "--wordnet-dir", str(DATABASE), "-o", str(out_path),
    )  # fmt: skip
    assert code == 0 and load(out_path) == load_shipped("cifar10-wordnet")


@needs_wordnet
def test_build_shipped_reproduces_the_shipped_files(capsys, tmp_path):
    from trainables.hierarchy.shipped import MODEL_BUILT

    argv = ("trees", "build", "shipped", "--out-dir", str(tmp_path), "--without-models")
    code, out, err = run(capsys, *argv)
    assert (code, err) == (0, "")
    assert out.count("\n") == len(SHIPPED) - len(MODEL_BUILT)
    for name, file in SHIPPED.items():
        if name not in MODEL_BUILT:
            assert (tmp_path / file).read_bytes() == (TREES_DIR / file).read_bytes(), file


@pytest.mark.slow
def test_the_shipped_embedding_trees_are_rebuilt_from_the_base_model(capsys, tmp_path, base_model):
    from raysearch.commands.tree_models import SHIPPED_EMBEDDING_TREES
    from trainables.hierarchy.embedding_trees import tree_disagreement
    from trainables.hierarchy.shipped import MODEL_BUILT

    assert set(SHIPPED_EMBEDDING_TREES) == set(MODEL_BUILT)
    code, out, err = run(capsys, "trees", "build", "shipped", "--out-dir", str(tmp_path))
    assert code == 0, err
    for file in SHIPPED.values():  # every shipped file, the model-built ones included
        assert f"wrote {tmp_path / file}: " in out
    for name in MODEL_BUILT:
        rebuilt, shipped = load(tmp_path / SHIPPED[name]), load_shipped(name)
        # Pretraining from scratch is not bit-reproducible (thread-dependent float sums), and
        # classes near a cluster boundary move: two clean-clone runs rebuilt embedded-text at
        # 0.0 and 0.23 of leaf pairs meeting at another level. A tree of another model
        # entirely would disagree on far more.
        assert rebuilt.level_sizes == shipped.level_sizes
        assert tree_disagreement(rebuilt, shipped) <= 0.35, name


# -- every user mistake: exit code 2 and one line on stderr -----------------------------------


def _files(tmp_path: Path) -> dict[str, Path]:
    form = dict(TREES["form"])
    files = {
        "cycle": write_yaml(tmp_path / "cycle.yaml", {"leaf": "A", "A": "B", "B": "A"}),
        "missing": write_yaml(
            tmp_path / "missing.yaml", {c: p for c, p in form.items() if c != "circle"}
        ),
        "extra": write_yaml(tmp_path / "extra.yaml", {**form, "blob": "oval"}),
        "form": write_yaml(tmp_path / "form.yaml", form),
        "empty": tmp_path / "empty.yaml",
        "bad_yaml": tmp_path / "bad.yaml",
        "bad_json": tmp_path / "bad.json",
        "twice": tmp_path / "twice.csv",
        "header": tmp_path / "header.csv",
        "columns": tmp_path / "columns.parquet",
        "unknown_id": tmp_path / "unknown_id.txt",
        "unknown_name": tmp_path / "unknown_name.txt",
        "no_ids": tmp_path / "no_ids.txt",
        "wrong_shape": tmp_path / "shape.json",
    }
    files["empty"].write_text("")
    files["bad_yaml"].write_text("a: [b\n")
    files["bad_json"].write_text('{"a": ')
    files["twice"].write_text("child,parent\na,X\nb,X\na,Y\n")
    files["header"].write_text("kid,parent\na,X\n")
    pq.write_table(pa.table({"kid": ["a"], "mother": ["X"]}), files["columns"])
    files["unknown_id"].write_text("n02119789\nn99999999\n")
    files["unknown_name"].write_text("kit_fox\nblorfle\n")
    files["no_ids"].write_text("# nothing\n\n")
    files["wrong_shape"].write_text("[1, 2, 3]")
    return files


MISTAKES = [
    (["validate", "{cycle}"], "cycle: A -> B -> A"),
    (["validate", "{missing}", "--dataset", "embedded"], "leaf `circle` has no path to the root"),
    (["validate", "{extra}", "--dataset", "embedded"], "node `blob`"),
    (["validate", "{twice}"], "child `a` is listed twice"),
    (["validate", "{empty}"], "the file is empty"),
    (["validate", "{bad_yaml}"], "not valid YAML"),
    (["validate", "{bad_json}"], "not valid JSON"),
    (["validate", "{header}"], "the header must be child,parent"),
    (["validate", "{columns}"], "a column `child` is required"),
    (["validate", "{wrong_shape}"], "every item must be a (child, parent) pair"),
    (
        ["validate", "{form}", "--dataset", "mnist"],
        "one of embedded, embedded-world, embedded-heldout-shapes",
    ),
    (["validate", "{form}", "--dataset", "cifar10"], "`airplane`"),
    (["validate", "nowhere.yaml"], "`file` must be an existing file"),
    (["build", "table", "{form}", "--depth", "0", "-o", "{out}"], "`depth` must be an integer"),
    (["build", "table", "{form}", "--depth", "4", "-o", "{out}"], "between 1 and 3"),
    (["build", "table", "{form}", "--depth", "two", "-o", "{out}"], "invalid int value"),
    (["build", "table", "{form}", "-o", "{tmp}/out.txt"], "`--output` must be a .json or"),
    (["build", "table", "{form}"], "required: -o/--output"),
    (["build", "wordnet", "--ids", "{unknown_id}", "-o", "{out}"], "`n99999999` is not a WordNet"),
    (["build", "wordnet", "--ids", "{unknown_name}", "-o", "{out}"], "`blorfle` is not a WordNet"),
    (["build", "wordnet", "--ids", "{no_ids}", "-o", "{out}"], "the file lists no classes"),
    (["build", "wordnet", "--dataset", "embedded", "-o", "{out}"], "one of cifar10, cifar100"),
    (
        ["build", "wordnet", "--dataset", "cifar10", "--ids", "{no_ids}", "-o", "{out}"],
        "not allowed with argument",
    ),
    (
        ["build", "wordnet", "--dataset", "cifar10", "--wordnet-dir", "{tmp}", "-o", "{out}"],
        "`wordnet_dir` must be a WordNet 3.0 database folder",
    ),
    (["build", "coarse", "--dataset", "cifar10", "-o", "{out}"], "`--dataset` must be cifar100"),
    (["build", "table", "{form}", "-o", "{tmp}/folder.json"], "a file path, not a folder"),
    (["build", "table", "{form}", "-o", "{form}/below/out.json"], "is a file)"),
    (["build", "table", "{form}", "-o", "/proc/out.json"], "a path outside /proc and /sys"),
    (["build", "shipped", "--out-dir", "{form}"], "`--out-dir` must be a folder, not a file"),
    (["build", "shipped", "--out-dir", "/sys/trees"], "a path outside /proc and /sys"),
    (["show", "nothing-like-this"], "`tree` must be a shipped name"),
    (["show", "embedded/shape"], "`tree` must be one of form, symmetry, corners"),
    (["show", "cifar10-wordnet", "--tree", "x"], "`--tree` must be `cifar10-wordnet`"),
    (["frobnicate"], "invalid choice"),
]


@pytest.mark.parametrize(("argv", "fragment"), MISTAKES)
def test_mistakes_exit_2_with_one_line(capsys, tmp_path, argv, fragment):
    names = {key: str(path) for key, path in _files(tmp_path).items()}
    (tmp_path / "folder.json").mkdir()
    names.update(out=str(tmp_path / "out.json"), tmp=str(tmp_path))
    code, out, err = run(capsys, "trees", *(arg.format(**names) for arg in argv))
    assert code == 2
    assert out == ""
    assert err.startswith("raysearch: error: ") and err.endswith("\n")
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    assert fragment in err, err
    assert not (tmp_path / "out.json").exists()


def test_build_embedding_trees_gives_a_forest_and_how_much_its_trees_differ(capsys, tmp_path):
    # A randomly initialised open_clip model: trees of no meaning, built by the real path.
    out_path = tmp_path / "cifar100-forest.json"
    code, out, err = run(
        capsys,
        *("trees", "build", "embedding", "--dataset", "cifar100", "--model", "ViT-B-32"),
        *("--depth", "2", "--linkage", "ward,average", "--templates", "tecoa"),
        *("-o", str(out_path)),
    )
    assert (code, err) == (0, ""), err
    forest = load(out_path)
    assert forest.names == ("cifar100-vit-b-32-ward", "cifar100-vit-b-32-average")
    for tree in forest:
        assert tree.leaves == dataset_classes("cifar100") and tree.level_sizes == (100, 22, 5)
        assert all(name.startswith("kind of ") for name in tree.level_names(2))
    assert "cifar100-vit-b-32-ward vs cifar100-vit-b-32-average:" in out
    assert "of leaf pairs meet at another level" in out


def test_build_embedding_tree_with_given_sizes_and_name(capsys, tmp_path):
    out_path = tmp_path / "t.json"
    code, out, err = run(
        capsys,
        *("trees", "build", "embedding", "--dataset", "cifar10", "--model", "ViT-B-32"),
        *("--depth", "2", "--level-sizes", "4,2", "--name", "mine", "-o", str(out_path)),
    )
    assert (code, err) == (0, ""), err
    tree = load(out_path)
    assert tree.name == "mine" and tree.level_sizes == (10, 4, 2)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--linkage", "single"], "`--linkage` must be one or more of ward, average, complete"),
        (["--level-sizes", "4,x"], "`--level-sizes` must be integers separated by commas"),
        (["--level-sizes", "2,4"], "`level_sizes` must be 2 strictly decreasing"),
        (
            ["--templates", "no placeholder"],
            "`--templates` must be one of ['tecoa', 'clip_benchmark']",
        ),
        (["--depth", "9"], "`depth` must be an integer from 1 to 8"),
    ],
)
def test_bad_embedding_tree_settings_are_one_line(capsys, tmp_path, extra, expected):
    argv = ["trees", "build", "embedding", "--dataset", "cifar10", "--model", "ViT-B-32"]
    argv += ["--depth", "2", "-o", str(tmp_path / "t.json"), *extra]
    code, _, err = run(capsys, *argv)
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err


def test_show_score_gives_level_accuracy_and_distance_agreement(capsys, tmp_path):
    from tests.array_datasets import write_cifar

    write_cifar(tmp_path, "cifar10", per_class=3)
    argv = ["trees", "show", "cifar10-wordnet", "--score", "--dataset", "cifar10"]
    argv += ["--root", str(tmp_path), "--model", "ViT-B-32", "--samples", "3"]
    code, out, err = run(capsys, *argv, "--json")
    assert (code, err) == (0, ""), err
    score = json.loads(out)["cifar10-wordnet"]
    assert set(score["levels"]) == {"0", "1", "2", "3"} and score["samples"] == 3
    assert all(0 <= accuracy <= 1 for accuracy in score["levels"].values())
    assert score["chance"]["0"] == 0.1 and -1 <= score["distance_agreement"] <= 1
    code, out, err = run(capsys, *argv)
    assert code == 0 and "tree `cifar10-wordnet` on 3 cifar10 val images: level 0" in out
    assert "tree distance vs text-embedding distance (Spearman)" in out


def test_show_score_needs_the_dataset(capsys):
    code, _, err = run(capsys, "trees", "show", "cifar10-wordnet", "--score")
    assert code == 2 and "`--dataset` must be the dataset whose classes" in err


@needs_wordnet
def test_build_balanced_wordnet(capsys, tmp_path):
    out_path = tmp_path / "balanced.json"
    argv = ("trees", "build", "wordnet", "--dataset", "cifar100", "--balanced", "-o", str(out_path))
    code, out, err = run(capsys, *argv)
    assert (code, err) == (0, "")
    assert load(out_path) == load_shipped("cifar100-wordnet-balanced")
    assert "cifar100-wordnet-balanced" in out and "100/44/29/13/4" in out
    code, _, err = run(
        capsys,
        "trees",
        "build",
        "wordnet",
        "--ids",
        str(out_path),
        "--balanced",
        "-o",
        str(tmp_path / "x.json"),
    )
    assert code == 2 and "`--depth` must be a number of levels with --balanced" in err


def test_a_reader_that_stops_early_ends_the_output_quietly():
    import subprocess
    import sys

    command = [sys.executable, "-m", "raysearch.cli", "trees", "show", "imagenet1k-wordnet"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout.readline().startswith(b"tree `imagenet1k-wordnet`")
    process.stdout.close()  # as `| head -1` does
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 0 and "Traceback" not in stderr, stderr


def test_build_a_tree_from_class_means_of_image_embeddings(capsys, tmp_path):
    from tests.image_datasets import write_image_folder

    root = write_image_folder(tmp_path / "pets", classes=("cat", "dog", "fox", "owl"), train=4)
    out_path = tmp_path / "pets.json"
    argv = ["trees", "build", "embedding", "--dataset", "imagefolder", "--root", str(root)]
    argv += ["--model", "ViT-B-32", "--embeddings", "images", "--samples", "100"]
    code, out, err = run(capsys, *argv, "--depth", "1", "-o", str(out_path))
    assert (code, err) == (0, ""), err
    tree = load(out_path)
    assert tree.leaves == ("cat", "dog", "fox", "owl") and tree.level_sizes == (4, 2)
    code, _, err = run(
        capsys, *argv, "--depth", "1", "-o", str(tmp_path / "few.json"), "--samples", "2"
    )
    assert code == 2 and "enough images for every class" in err
