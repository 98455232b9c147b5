# Two entry points (see README):
#   make run   - create .venv, install pagedkv, run the simulation and write fragmentation.png
#   make test  - create .venv, install pagedkv with all extras, install chromium if missing, lint, run the
#                whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint chromium bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.core: $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install -q -c constraints.txt -e .
	touch $@

$(VENV)/.dev: $(VENV)/.core
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[torch,dev,ray,parquet]'
	touch $@

run: $(VENV)/.core
	$(BIN)/pagedkv simulate

lint: $(VENV)/.dev
	$(BIN)/ruff check src tests benchmarks simulate.py
	$(BIN)/ruff format --check src tests benchmarks simulate.py
	$(BIN)/mypy

test: lint chromium
	$(BIN)/python -m pytest -q

# The `pagedkv watch` tests drive Debian's chromium (through Playwright, never its own browser download).
# Installed here when missing; where it cannot be (not root, no package index) the browser tests skip.
chromium:
	@test -x /usr/bin/chromium || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq chromium >/dev/null; } \
		|| echo "chromium could not be installed: the browser tests of pagedkv watch will be skipped"

bench: $(VENV)/.dev
	$(BIN)/python benchmarks/bench_block_manager.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .ruff_cache
