# transferpilot: `make run` and `make test` are all a newcomer needs.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Offline by default: no analytics, no telemetry.
export DVC_NO_ANALYTICS := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120
export DO_NOT_TRACK := 1
export NO_MKDOCS_2_WARNING := 1
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: help install run test test-fast lint format docs clean bench bench-quick

help:
	@echo "make run    - install if needed, then run the pipeline on the embedded default data"
	@echo "make test   - install if needed, then run the whole test suite (two workers)"
	@echo "make test-fast - unit and contract tests only (about a minute)"
	@echo "make lint   - ruff check and format check"
	@echo "make docs   - serve the documentation site on http://127.0.0.1:8000"
	@echo "make bench  - every benchmark (about 90 min on 2 cores; needs ../shared/datasets)"
	@echo "make bench-quick - CI-sized benchmarks (a few minutes)"

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

# The whole pipeline as the Prefect flow (each DVC stage a task); ends with the
# headline metrics and the report's path.
run: $(STAMP) data/digits
	transferpilot run

# Two pytest processes (pytest-xdist), each test file whole on one of them: its module
# fixtures are built once. TEST_WORKERS=0 runs the suite in this process. Each worker
# (and the stage processes it starts) computes on one thread, so that two workers do not
# fight over two cores (13.0 min against 15.0 with PyTorch's default threads, at 83e5907;
# 8.4 min at 46e4e7c, where most tests run their stages in-process on shared projects).
TEST_WORKERS ?= 2
TEST_THREADS ?= 1

test: $(STAMP)
	OMP_NUM_THREADS=$(TEST_THREADS) $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile \
		--durations=20

# The inner loop: unit and contract tests only (CI runs `make test`, the whole suite).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile tests/unit tests/contract

lint: $(STAMP)
	ruff check .
	ruff format --check .

# The documentation site (MkDocs, docs/ and mkdocs.yml); `make test` builds it with --strict.
docs: $(STAMP)
	$(BIN)/mkdocs serve --dev-addr 127.0.0.1:8000

format: $(STAMP)
	ruff format .
	ruff check --fix .

# Benchmarks print tables and write benchmarks/results/*.{json,md}; the docs
# performance section shows those tables. The decision benchmark trains every candidate
# decide weighs on the six shared sets, fine-tuning plans of 3 epochs (about an hour here).
bench: $(STAMP)
	$(BIN)/python -m benchmarks.extract
	$(BIN)/python -m benchmarks.profile_cache
	$(BIN)/python -m benchmarks.feature_classifiers
	$(BIN)/python -m benchmarks.finetune
	$(BIN)/python -m benchmarks.decision_quality
	$(BIN)/python -m benchmarks.backbones
	$(BIN)/python -m benchmarks.overhead
	$(BIN)/python -m benchmarks.scale
	$(BIN)/python -m benchmarks.scale_out
	$(BIN)/python -m benchmarks.label_issues
	$(BIN)/python -m benchmarks.explain
	$(BIN)/python -m benchmarks.imbalance

bench-quick: $(STAMP)
	$(BIN)/python -m benchmarks.extract --quick
	$(BIN)/python -m benchmarks.decision_quality --quick ../shared/datasets/hymenoptera
	$(BIN)/python -m benchmarks.scale --quick

clean:
	rm -rf data/prepared data/features data/profile data/decision data/digits models/train \
		models/checkpoints reports/evaluation reports/report.md reports/report.html \
		reports/label_issues.csv reports/explanations \
		.pytest_cache .ruff_cache site
