# transferpilot: `make run` and `make test` are all a newcomer needs.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SAMPLES = $$($(BIN)/python -c "import sklearn.datasets as d, pathlib; p = pathlib.Path(d.__file__).parent / 'images'; print(p / 'china.jpg', p / 'flower.jpg')")

# Offline by default: no analytics, no telemetry.
export DVC_NO_ANALYTICS := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: help install run test test-fast lint format clean

help:
	@echo "make run    - install if needed, then run the pipeline on the embedded default data"
	@echo "make test   - install if needed, then run the test suite"
	@echo "make lint   - ruff check and format check"

install: $(STAMP)

# Re-installs only when pyproject.toml changes: a second `make test` starts at once.
$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found (set PYTHON=...)"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing transferpilot and its dependencies into $(VENV) (a few minutes, once)"
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]" 2>&1 \
		| { grep -v '^WARNING: Location' || true; }
	@touch $@

data/digits: | $(STAMP)
	transferpilot digits data/digits

run: $(STAMP) data/digits
	dvc repro
	@echo; head -n 20 data/prepared/validation.txt
	@echo; $(BIN)/python -c "import json; d = json.load(open('data/decision/decision.json')); \
		print('Decision:', d['strategy'], 'on', d['layer'], '(' + d['quadrant'] + ')'); print(d['reason'])"
	@echo; echo "The pretrained model as-is, on two sample photos:"
	@transferpilot predict -k 3 $(SAMPLES)

test: $(STAMP)
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

lint: $(STAMP)
	ruff check .
	ruff format --check .

format: $(STAMP)
	ruff format .
	ruff check --fix .

clean:
	rm -rf data/prepared data/digits .pytest_cache .ruff_cache
