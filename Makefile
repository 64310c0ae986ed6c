# One entry point for people and CI. All state goes under var/, which `make clean` removes.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NAB ?= ../shared/nab

.PHONY: setup run eval test lint format bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# The main job: backtest every bundled scenario (and NAB when present) and print the evaluation table.
run: $(STAMP)
	$(BIN)/llmwatch eval --nab $(NAB)

eval: run

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP)
	$(BIN)/python bench/run.py --nab $(NAB)

clean:
	rm -rf var .pytest_cache .ruff_cache .hypothesis .benchmarks
