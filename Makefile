# The README's two commands. Each does its own set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
WORDNET := /usr/share/wordnet/data.noun
# The exact versions every dependency is installed at (tested by CI), one file per Python.
PYTHON_VERSION := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
LOCK := locks/py$(PYTHON_VERSION).txt

.PHONY: demo test test-fast test-cluster lock setup

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall when the dependency list or the lock changes. With the lock, pip has one candidate
# per package and nothing to resolve; without one (another Python), the ranges of pyproject.toml.
CONSTRAINTS := $(if $(wildcard $(LOCK)),$(LOCK),/dev/null)
$(STAMP): pyproject.toml $(wildcard $(LOCK)) | $(BIN)/python
	@test -f $(LOCK) || echo "note: no $(LOCK): resolving the ranges of pyproject.toml (make lock writes one)"
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e ".[eval,test]"
	touch $(STAMP)

# Refresh the lock of this Python: resolve the ranges of pyproject.toml afresh in a new virtual
# environment and record what was installed. Run `make test` with it before committing it.
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet -e ".[eval,test]"
	{ echo "# Exact versions of every dependency of raysearch[eval,test] on Python $(PYTHON_VERSION),"; \
	  echo "# used as pip constraints by the Makefile and the Dockerfile. Refresh: make lock"; \
	  .lock-venv/bin/python -m pip freeze --exclude-editable; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)
	rm -rf .lock-venv
	@echo "wrote $(LOCK); run make test before committing it"

# The WordNet 3.0 database (Debian's wordnet-base) for WordNet class trees, tested for real.
$(WORDNET):
	@if [ "$$(id -u)" = 0 ]; then \
		apt-get install -y -q wordnet-base >/dev/null 2>&1 || \
		{ apt-get update -q >/dev/null && apt-get install -y -q wordnet-base >/dev/null; }; \
	else \
		echo "note: run 'sudo apt-get install -y wordnet-base' for the WordNet tree builder"; \
	fi

# Everything `make test` installs, without running the tests (CI times the two apart).
setup: $(STAMP) $(WORDNET)

demo: $(STAMP)
	$(BIN)/raysearch demo

test: $(STAMP) $(WORDNET)
	$(BIN)/python -m pytest -q

# The developer's loop before each commit: everything but the tests that start Ray, run a search
# or need the pretrained base model (marked slow in tests/conftest.py).
test-fast: $(STAMP) $(WORDNET)
	$(BIN)/python -m pytest -q -m "not slow"

# The tests that start a multi-node Ray cluster and an MLflow server on 127.0.0.1 (about 6
# minutes; part of `make test`).
test-cluster: $(STAMP) $(WORDNET)
	$(BIN)/python -m pytest -q -m cluster
