# The README's two commands. Each does its own set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
WORDNET := /usr/share/wordnet/data.noun

.PHONY: demo test test-fast

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall when the dependency list changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[eval,test]"
	touch $(STAMP)

# The WordNet 3.0 database (Debian's wordnet-base) for WordNet class trees, tested for real.
$(WORDNET):
	@if [ "$$(id -u)" = 0 ]; then \
		apt-get install -y -q wordnet-base >/dev/null 2>&1 || \
		{ apt-get update -q >/dev/null && apt-get install -y -q wordnet-base >/dev/null; }; \
	else \
		echo "note: run 'sudo apt-get install -y wordnet-base' for the WordNet tree builder"; \
	fi

demo: $(STAMP)
	$(BIN)/raysearch demo

test: $(STAMP) $(WORDNET)
	$(BIN)/python -m pytest -q

# The developer's loop before each commit: everything but the tests that start Ray, run a search
# or need the pretrained base model (marked slow in tests/conftest.py).
test-fast: $(STAMP) $(WORDNET)
	$(BIN)/python -m pytest -q -m "not slow"
