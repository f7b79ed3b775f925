# The whole set-up on a fresh machine: `make run` or `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
export HF_HUB_OFFLINE ?= 1
export RAY_USAGE_STATS_ENABLED ?= 0

.PHONY: install install-dev run test test-fast lint bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# torch first, pinned: that resolves to the local CPU wheel instead of a CUDA build. Then the
# server extras: `make run` serves, so it needs more than `pip install modelyard` (the client).
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[server]'
	touch $@

$(DEV_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[server,dev]'
	touch $@

install: $(STAMP)
install-dev: $(DEV_STAMP)

run: $(STAMP)
	$(BIN)/modelyard up

# The multi-node fault case starts a Ray of its own, so it runs in a pytest process of its own.
test: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -m "not multinode"
	$(BIN)/python -m pytest -q -m multinode

test-fast: $(DEV_STAMP)
	$(BIN)/python -m pytest -q -m "not e2e"

lint: $(DEV_STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: $(DEV_STAMP)
	$(BIN)/python bench/serve_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
