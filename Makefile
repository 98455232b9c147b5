# Two entry points (see README):
#   make run   - create .venv, install pagedkv, run the simulation and write fragmentation.png
#   make test  - create .venv, install pagedkv with all extras, lint, run the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.core: $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install -q -c constraints.txt -e .
	touch $@

$(VENV)/.dev: $(VENV)/.core
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[torch,dev]'
	touch $@

run: $(VENV)/.core
	$(BIN)/pagedkv simulate

lint: $(VENV)/.dev
	$(BIN)/ruff check src tests benchmarks simulate.py
	$(BIN)/ruff format --check src tests benchmarks simulate.py

test: lint
	$(BIN)/python -m pytest -q

bench: $(VENV)/.dev
	$(BIN)/python benchmarks/bench_block_manager.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .ruff_cache
