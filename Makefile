# One entry point for people and CI. All state goes under var/, which `make clean` removes.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NAB ?= ../shared/nab

.PHONY: setup model run eval test lint format bench notebooks clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# vLLM (the GPU or CPU build, by whether a GPU is present) and the CPU model converted into
# var/models/; idempotent, a no-op once done (serving/model_setup.py).
model: $(STAMP)
	$(BIN)/python -m serving.model_setup

setup: $(STAMP) model

# The main job: backtest every bundled scenario (and NAB when present) and print the evaluation table.
run: $(STAMP)
	$(BIN)/llmwatch eval --nab $(NAB)

eval: run

test: setup
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

# JupyterLab for the notebooks (notebooks/README.md): the project's environment and kernel, bound
# to 127.0.0.1 (token login), rooted at notebooks/, its configuration and runtime state in var/.
# More options: make notebooks JUPYTER_ARGS="--port=8899" (as root, e.g. in a container: --allow-root).
NB_STAMP := $(VENV)/.notebooks-installed
JUPYTER_STATE := $(CURDIR)/var/jupyter

$(NB_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev,notebooks]'
	touch $(NB_STAMP)

notebooks: $(NB_STAMP)
	mkdir -p $(JUPYTER_STATE)
	PATH="$(abspath $(BIN)):$$PATH" JUPYTER_CONFIG_DIR=$(JUPYTER_STATE)/config \
	JUPYTER_DATA_DIR=$(JUPYTER_STATE)/data JUPYTER_RUNTIME_DIR=$(JUPYTER_STATE)/runtime \
	IPYTHONDIR=$(JUPYTER_STATE)/ipython MPLCONFIGDIR=$(JUPYTER_STATE)/matplotlib \
	$(BIN)/jupyter lab --ServerApp.ip=127.0.0.1 --ServerApp.root_dir=notebooks --no-browser \
	$(JUPYTER_ARGS)

clean:
	rm -rf var notebooks/output .pytest_cache .ruff_cache .hypothesis .benchmarks
