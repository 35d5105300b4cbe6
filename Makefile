# mlplab: set-up, tests, lint and the main jobs. Everything installs into .venv from scratch.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch is installed first and pinned: an unpinned torch can pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.mlplab-installed
PYTEST_ARGS ?=

.PHONY: install test lint format train bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --quiet $(TORCH_SPEC)
	$(PIP) install --quiet -e ".[dev]"
	touch $(STAMP)

test: install
	$(PY) -m pytest -n 2 $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

train: install
	$(VENV)/bin/mlplab-train experiment=tutorial

bench: install
	$(PY) scripts/bench_lif.py
	$(PY) scripts/bench_train.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
