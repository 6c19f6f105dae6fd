"""The Dockerfile, checked without Docker: it installs what the Makefile installs (less the test
extra), copies files that exist (and that .dockerignore keeps), and ends as an ordinary user."""

from __future__ import annotations

import fnmatch
import re
import shlex
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads pyproject.toml")

ROOT = Path(__file__).resolve().parents[1]
#: pip options that take a value (their value is not a requirement).
PIP_VALUE_OPTIONS = {
    "-c",
    "--constraint",
    "-r",
    "--requirement",
    "-i",
    "--index-url",
    "--extra-index-url",
    "-f",
    "--find-links",
    "--target",
    "-t",
    "--prefix",
    "--root",
}


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile: comments dropped, continued lines joined."""
    lines, current = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        lines.append(current + line)
        current = ""
    result = []
    for line in lines:
        keyword, _, arguments = line.partition(" ")
        result.append((keyword.upper(), arguments.strip()))
    return result


def pip_targets(command: str) -> list[tuple[str, frozenset[str]]]:
    """The requirements of the first ``pip install`` in a shell command, as (path, extras)."""
    for part in command.replace("&&", ";").split(";"):
        words = shlex.split(part)
        if "pip" in [Path(w).name for w in words] and "install" in words:
            words = words[words.index("install") + 1 :]
            break
    else:
        raise AssertionError(f"no pip install in {command!r}")
    targets, skip = [], False
    for word in words:
        if skip:
            skip = False
        elif word in ("-e", "--editable"):
            continue  # the next word is the requirement itself
        elif word in PIP_VALUE_OPTIONS:
            skip = True
        elif not word.startswith("-"):
            path, _, extras = word.partition("[")
            names = frozenset(e.strip() for e in extras.rstrip("]").split(",") if e.strip())
            targets.append((path, names))
    return targets


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return instructions((ROOT / "Dockerfile").read_text())


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _makefile_pip_line() -> str:
    """The install of the project's virtual environment (not the one of ``make lock``)."""
    lines = [
        line
        for line in (ROOT / "Makefile").read_text().splitlines()
        if "pip install" in line and "$(BIN)/python" in line
    ]
    assert len(lines) == 1, lines
    return lines[0].strip()


def _constraint(command: str) -> str:
    words = shlex.split(command.replace("&&", " ").replace(";", " "))
    assert "-c" in words, f"no constraints file in {command!r}"
    return words[words.index("-c") + 1]


def _copies(dockerfile) -> list[tuple[list[str], str]]:
    copies = []
    for keyword, arguments in dockerfile:
        if keyword in ("COPY", "ADD"):
            words = [w for w in shlex.split(arguments) if not w.startswith("--")]
            copies.append((words[:-1], words[-1]))
    return copies


def test_the_image_installs_what_the_makefile_installs_without_the_test_extra(
    dockerfile, pyproject
):
    runs = [arguments for keyword, arguments in dockerfile if keyword == "RUN"]
    pip_runs = [run for run in runs if "pip install" in run]
    assert len(pip_runs) == 1, pip_runs
    docker_targets = pip_targets(pip_runs[0])
    make_targets = pip_targets(_makefile_pip_line())
    assert [path for path, _ in docker_targets] == [path for path, _ in make_targets] == ["."]
    docker_extras, make_extras = docker_targets[0][1], make_targets[0][1]
    assert docker_extras == make_extras - {"test"}
    assert docker_extras <= set(pyproject["project"].get("optional-dependencies", {}))
    assert "--no-cache-dir" in shlex.split(pip_runs[0])
    # The project is copied to the working directory pip installs from.
    workdirs = [arguments for keyword, arguments in dockerfile if keyword == "WORKDIR"]
    assert any(dest in ("./", ".", workdirs[0]) for _, dest in _copies(dockerfile))


def test_the_image_and_the_makefile_install_the_versions_of_the_lock(dockerfile):
    makefile = (ROOT / "Makefile").read_text()
    assert _constraint(_makefile_pip_line()) == "$(CONSTRAINTS)"
    assert "LOCK := locks/py$(PYTHON_VERSION).txt" in makefile
    (pip_run,) = [a for k, a in dockerfile if k == "RUN" and "pip install" in a]
    assert _constraint(pip_run) == "$lock"
    assert 'lock="locks/py$(python3 -c' in pip_run
    assert any("locks" in sources for sources, _ in _copies(dockerfile))
    # The lock of the image's default Python exists, pins exact versions, and covers every
    # dependency the project declares.
    lock = ROOT / "locks" / "py3.11.txt"
    pins = {}
    for line in lock.read_text().splitlines():
        if line and not line.startswith("#"):
            name, separator, version = line.partition("==")
            assert separator and version, f"{line!r} is not an exact pin"
            pins[_canonical(name)] = version
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        declared.extend(extra)
    for requirement in declared:
        name = re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0]
        assert _canonical(name) in pins, f"{name} is not in {lock.name}"


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_image_installs_the_wordnet_database_the_makefile_installs(dockerfile):
    makefile = (ROOT / "Makefile").read_text()
    assert "apt-get install -y -q wordnet-base" in makefile
    apt_runs = [a for k, a in dockerfile if k == "RUN" and "apt-get install" in a]
    assert any("wordnet-base" in shlex.split(run.replace(";", " ")) for run in apt_runs)


def test_every_copied_file_exists_and_is_in_the_build_context(dockerfile):
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copies = _copies(dockerfile)
    assert copies
    for sources, _ in copies:
        for source in sources:
            assert (ROOT / source).exists(), source
            parts = Path(source).parts
            prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
            for pattern in ignored:
                bare = pattern.removeprefix("**/")
                hit = any(fnmatch.fnmatch(p, bare) or fnmatch.fnmatch(p, pattern) for p in prefixes)
                assert not hit, f"{source} is copied but .dockerignore drops it ({pattern})"


def test_what_pip_needs_to_build_the_project_is_copied(dockerfile, pyproject):
    copied = {Path(s).parts[0] for sources, _ in _copies(dockerfile) for s in sources}
    assert "pyproject.toml" in copied
    assert pyproject["project"]["readme"] in copied  # setuptools reads it while building
    for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]:
        assert pattern.rstrip("*") in copied, pattern


def test_the_image_ends_as_an_ordinary_user(dockerfile):
    users = [arguments.split(":")[0] for keyword, arguments in dockerfile if keyword == "USER"]
    assert users, "the image should not run as root"
    assert users[-1] not in ("root", "0")
    last_user = max(i for i, (keyword, _) in enumerate(dockerfile) if keyword == "USER")
    created = [
        a for k, a in dockerfile[:last_user] if k == "RUN" and ("useradd" in a or "adduser" in a)
    ]
    assert any(users[-1] in shlex.split(run) for run in created)


def test_base_image_is_an_argument_and_the_default_command_is_the_cli(dockerfile, pyproject):
    keywords = [keyword for keyword, _ in dockerfile]
    assert keywords[0] == "ARG" and dockerfile[0][1] == "BASE_IMAGE=python:3.11-slim"
    assert dockerfile[1] == ("FROM", "${BASE_IMAGE}")
    assert "EXPOSE" not in keywords  # a Ray head's ports are documented, not exposed
    text = (ROOT / "Dockerfile").read_text()
    assert all(port in text for port in ("6379", "8265", "10001"))
    command = [arguments for keyword, arguments in dockerfile if keyword == "CMD"]
    assert command == ['["raysearch", "--help"]']
    assert "raysearch" in pyproject["project"]["scripts"]


def test_the_build_context_leaves_out_environments_stores_and_caches():
    ignored = set((ROOT / ".dockerignore").read_text().split())
    expected = {".venv", "ray_results", "mlflow.db", "mlartifacts", "optuna.db", ".git"}
    assert expected <= ignored
    assert {"**/__pycache__", ".pytest_cache", ".ruff_cache"} <= ignored
