# The README's two set-up commands. Both work on a fresh machine: they create .venv if it is
# missing and install what they need (torch from the machine's local wheel cache where present).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.sampan-installed
DEV_STAMP := $(VENV)/.sampan-dev-installed

.PHONY: run demo test lint format install dev benchmark clean browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(DEV_STAMP): pyproject.toml $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(STAMP)

dev: $(DEV_STAMP)

## run: the running platform - serve the digits starter model (built on first start) on :8000
run: $(STAMP)
	$(BIN)/sampan serve --starter

## demo: train, evaluate and predict with the starter model, then exit
demo: $(STAMP)
	$(BIN)/sampan demo

## lint: ruff (lint + format check) and mypy (strict) on the whole package
lint: $(DEV_STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

## browser: Debian's chromium for the console's browser tests (Playwright drives it; it
## cannot download a browser of its own here)
browser:
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

## test: lint, then the whole test suite (slow end-to-end and browser tests included)
test: lint browser
	$(BIN)/python -m pytest -q

format: $(DEV_STAMP)
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

benchmark: $(STAMP)
	$(BIN)/pip install --quiet -e '.[bench,openvino]'
	command -v wrk >/dev/null || apt-get install -y wrk
	$(BIN)/python benchmarks/train_epoch.py
	$(BIN)/python benchmarks/inference.py
	$(BIN)/python benchmarks/serving.py
	$(BIN)/python benchmarks/platform_overhead.py
	$(BIN)/python benchmarks/embeddings.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
