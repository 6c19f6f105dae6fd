# The image a Ray cluster runs, head and workers alike: raysearch with Ray, PyTorch, open_clip,
# Optuna and MLflow, and the WordNet database for WordNet class trees.
#
#   docker build -t raysearch .
#   docker run --rm raysearch                        # raysearch --help
#   docker run --rm -it raysearch raysearch demo
#
# BASE_IMAGE: a Debian or Ubuntu image with Python >= 3.10 (as `python3`). The default runs on
# CPU and GPU nodes alike: PyTorch's Linux x86_64 wheels on PyPI bring their own CUDA runtime,
# so a GPU node needs only the NVIDIA driver and the NVIDIA container toolkit (`--gpus all`).
# To build on an NVIDIA CUDA image instead (the apt-get step below installs its Python, 3.10 on
# Ubuntu 22.04):
#   docker build --build-arg BASE_IMAGE=nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04 \
#       -t raysearch:cuda .
#
# Ports: none is exposed. A container that runs a Ray head (`ray start --head --block ...`)
# serves 6379 (GCS), 8265 (dashboard) and 10001 (Ray Client); publish the ones you need
# yourself, bound to a private interface, e.g. `-p 127.0.0.1:8265:8265`.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# wordnet-base: the WordNet 3.0 database (/usr/share/wordnet) that `make test` also installs.
# wget: KubeRay (1.1 and later) probes a Ray pod's health with it, unless it and Ray are recent
# enough to use HTTP probes.
# A virtual environment, the same on every base (recent Debian and Ubuntu system Pythons refuse
# pip installs outside one); a base without Python or its venv module (a CUDA image) gets them.
ENV VIRTUAL_ENV=/opt/venv
RUN apt-get update \
    && apt-get install -y --no-install-recommends wordnet-base wget \
    && if ! python3 -m venv "$VIRTUAL_ENV" 2>/dev/null; then \
        apt-get install -y --no-install-recommends python3 python3-venv \
        && rm -rf "$VIRTUAL_ENV" && python3 -m venv "$VIRTUAL_ENV"; \
    fi \
    && rm -rf /var/lib/apt/lists/*
ENV PATH="$VIRTUAL_ENV/bin:$PATH"

WORKDIR /opt/raysearch
COPY pyproject.toml README.md ./
COPY raysearch ./raysearch
COPY trainables ./trainables
COPY search_spaces ./search_spaces
COPY locks ./locks
# The install the Makefile does (with AutoAttack for `raysearch evaluate`), without the test
# extra and not editable, at the versions of the lock of this Python (locks/pyX.Y.txt). A Python
# without one (3.10 on Ubuntu 22.04) installs from the ranges of pyproject.toml.
RUN lock="locks/py$(python3 -c 'print("%d.%d" % __import__("sys").version_info[:2])').txt" \
    && if [ ! -f "$lock" ]; then \
        echo "note: no $lock: installing from the ranges of pyproject.toml"; lock=/dev/null; \
    fi \
    && pip install --no-cache-dir -c "$lock" ".[eval]"

# Run as an ordinary user; its home holds the default stores (./mlflow.db, ./ray_results) and
# the dataset and model caches (~/.cache/raysearch).
RUN useradd --create-home --shell /bin/bash raysearch
USER raysearch
WORKDIR /home/raysearch

CMD ["raysearch", "--help"]
