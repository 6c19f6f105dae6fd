"""A registered model outside this checkout: its requirements, its own code, and a live server.

No package index has ``raysearch``: the model must carry the code it runs (``code/``) and require
only pinned third-party distributions. These tests read its requirements, load it in a Python
that cannot import the installed ``raysearch``, and serve it with ``mlflow models serve``.
"""

from __future__ import annotations

import base64
import importlib.metadata
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from packaging.requirements import Requirement

from raysearch.cli import main
from tests.raysearch.conftest import MODEL

CHAMPION = f"models:/{MODEL}@champion"
#: How long the server may take to load the model and answer /ping (a cold import of torch and
#: open_clip on a busy two-core machine takes most of it).
SERVER_START_S = 120


def _uri(searched) -> str:
    return searched["result"].tracking_uri


@pytest.fixture(scope="module")
def model_folder(searched, promoted, tmp_path_factory) -> Path:
    """The registered model (``models:/NAME@champion``) downloaded into a folder of its own."""
    mlflow.set_tracking_uri(_uri(searched))  # models:/ URIs resolve in the registry
    try:
        folder = mlflow.artifacts.download_artifacts(
            artifact_uri=CHAMPION, dst_path=str(tmp_path_factory.mktemp("model"))
        )
    finally:
        mlflow.set_tracking_uri(None)
    return Path(folder)


@pytest.fixture(scope="module")
def png_files(tmp_path_factory) -> list[Path]:
    """Two test images of the embedded dataset, as PNG files."""
    from PIL import Image

    from trainables.data.embedded import load_embedded

    folder = tmp_path_factory.mktemp("images")
    paths = []
    for index, image in enumerate(load_embedded().split("test").images[:2]):
        path = folder / f"image-{index}.png"
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(path)
        paths.append(path)
    return paths


def test_the_model_requires_pinned_installed_distributions_and_carries_its_code(model_folder):
    lines = (model_folder / "requirements.txt").read_text().split()
    assert lines
    for line in lines:
        requirement = Requirement(line)
        assert requirement.name != "raysearch", line
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", line
        assert specifier.version == importlib.metadata.version(requirement.name), line
    code = model_folder / "code"
    assert (code / "raysearch" / "pyfunc_entry.py").is_file()
    assert (code / "trainables" / "model_configs").is_dir()
    assert not (code / "trainables" / "hierarchy" / "trees").exists()  # the model has its own
    assert not list(code.rglob("__pycache__"))


def _leaves_in_process(model_folder: Path, images: list[Path]) -> list[str]:
    model = mlflow.pyfunc.load_model(str(model_folder))
    return model.predict(pd.DataFrame({"image": [str(path) for path in images]}))["leaf"].tolist()


#: Run by a Python that sees this environment's distributions but not the editable raysearch:
#: prints whether raysearch was importable before loading, where it came from after, the leaves.
_OUTSIDE_SCRIPT = """
import json, sys
try:
    import raysearch
    before = raysearch.__file__
except ImportError:
    before = None
import mlflow.pyfunc
import pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
frame = model.predict(pd.DataFrame({"image": sys.argv[2:]}))
import raysearch
print(json.dumps({"before": before, "after": raysearch.__file__, "leaves": list(frame["leaf"])}))
"""


def test_the_model_loads_and_predicts_where_raysearch_is_not_installed(
    model_folder, png_files, tmp_path
):
    # A new virtual environment that reads this one's site-packages through a .pth file: a .pth
    # naming a folder does not run that folder's own .pth files, so the editable install of
    # raysearch (a .pth finder) is invisible there, while torch, MLflow and the rest are found.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site_packages = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    ours = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])
    Path(site_packages, "this-environment.pth").write_text("\n".join(ours) + "\n")
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    script = tmp_path / "outside.py"
    script.write_text(_OUTSIDE_SCRIPT)
    outside = subprocess.run(
        [str(python), str(script), str(model_folder), *map(str, png_files)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert outside.returncode == 0, outside.stderr[-3000:]
    result = json.loads(outside.stdout.strip().splitlines()[-1])
    assert result["before"] is None
    assert Path(result["after"]).resolve().is_relative_to((model_folder / "code").resolve())
    assert result["leaves"] == _leaves_in_process(model_folder, png_files)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _non_loopback_address() -> str | None:
    """An IPv4 address of this machine outside 127.0.0.0/8 (None when it has none)."""
    candidates = []
    try:
        candidates.append(socket.gethostbyname(socket.gethostname()))
    except OSError:
        pass
    try:
        listed = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=10)
        candidates += listed.stdout.split()
    except (OSError, subprocess.SubprocessError):
        pass
    for candidate in candidates:
        try:
            address = ipaddress.ip_address(candidate)
        except ValueError:
            continue
        if address.version == 4 and not address.is_loopback:
            return candidate
    return None


def _live_members(group: int) -> list[int]:
    """The processes of process group ``group`` that are not zombies (a zombie left to a parent
    that does not reap it is dead all the same)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _parent, process_group = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue  # the process ended while being read
        if int(process_group) == group and state != "Z":
            members.append(int(stat.parent.name))
    return members


def _stop(server: subprocess.Popen) -> None:
    """Kill the server's process group (MLflow's CLI and the uvicorn it starts) and reap it."""
    try:
        os.killpg(server.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    server.wait(timeout=30)


def _wait_for_ping(server: subprocess.Popen, log: Path, base: str) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the server exited ({server.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{base}/ping", timeout=5) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(1)
    pytest.fail(f"no answer on /ping in {SERVER_START_S} s:\n{log.read_text()[-3000:]}")


def _cli_predictions(searched, images: list[Path], capsys) -> list[dict]:
    capsys.readouterr()
    argv = ["predict", "--model", CHAMPION, *map(str, images), "--json"]
    assert main([*argv, "--tracking-uri", _uri(searched)]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads process groups in /proc")
def test_mlflow_models_serve_answers_on_loopback_only_as_raysearch_predict_does(
    searched, promoted, png_files, tmp_path, capsys
):
    port = _free_port()
    bin_folder = Path(sys.executable).parent  # where MLflow finds uvicorn
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": _uri(searched),
        "PATH": f"{bin_folder}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    command = [str(bin_folder / "mlflow"), "models", "serve", "-m", CHAMPION]
    command += ["--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)]
    log = tmp_path / "server.log"
    base = f"http://127.0.0.1:{port}"
    body = {
        "dataframe_split": {
            "columns": ["image"],
            "data": [[base64.b64encode(path.read_bytes()).decode()] for path in png_files],
        }
    }
    with log.open("wb") as output:
        server = subprocess.Popen(
            command, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _wait_for_ping(server, log, base)
        request = urllib.request.Request(
            f"{base}/invocations",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=120) as answer:
            served = json.loads(answer.read())["predictions"]
        address = _non_loopback_address()
        if address is not None:
            with socket.socket() as outside:
                outside.settimeout(5)
                assert outside.connect_ex((address, port)) != 0, f"{address}:{port} answered"
    finally:
        _stop(server)
    deadline = time.monotonic() + 30
    while _live_members(server.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _live_members(server.pid)

    printed = _cli_predictions(searched, png_files, capsys)
    assert len(served) == len(printed) == len(png_files)
    for row, expected in zip(served, printed, strict=True):
        assert row["leaf"] == expected["leaf"]["class"]
        assert row["leaf_probability"] == pytest.approx(expected["leaf"]["probability"], abs=1e-4)
        levels = {
            f"{tree}/{level['level']}": level["class"]
            for tree, chain in expected["levels"].items()
            for level in chain
            if level["level"] > 0
        }
        assert levels
        assert {column: row[column] for column in levels} == levels
        class_columns = {c for c in row if "/" in c and not c.endswith("/probability")}
        assert class_columns == set(levels)
