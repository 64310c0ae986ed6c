# One entry point for people and CI. All state goes under var/, which `make clean` removes.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NAB ?= ../shared/nab

.PHONY: setup model stack-tools demo run eval check test lint format bench notebooks clean

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

# Prometheus, promtool, Alertmanager, VictoriaMetrics and PostgreSQL (for the tests) from Debian
# when missing (root only); the tests run PostgreSQL's initdb and postgres from
# /usr/lib/postgresql/<ver>/bin in folders of their own. A policy-rc.d made for the install (and
# removed after it) keeps the packages' services (and the packaged PostgreSQL cluster) from
# starting and taking the ports; the node exporter the prometheus package recommends is not needed.
stack-tools:
	@missing=""; for tool in prometheus promtool prometheus-alertmanager amtool victoria-metrics; do \
	    command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" != 0 ]; then \
	        echo "missing:$$missing. As root: make stack-tools" >&2; \
	        exit 1; fi; \
	    made=""; [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; \
	        chmod +x /usr/sbin/policy-rc.d; made=1; }; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	        --no-install-recommends prometheus prometheus-alertmanager victoria-metrics postgresql; \
	    status=$$?; \
	    [ -z "$$made" ] || rm -f /usr/sbin/policy-rc.d; exit $$status; fi

# The main job: the whole stack on loopback (llmwatch demo, state in var/demo): serving app and load,
# Prometheus seeded with history, Alertmanager, a webhook receiver and the detector; a fault after
# the warm-up, the anomaly and the alert it raises shown here. Stops after 12 minutes or on Ctrl-C.
# Faster, without vLLM: make demo DEMO_ARGS="--engine synthetic"
demo: setup stack-tools
	$(BIN)/llmwatch demo $(DEMO_ARGS)

run: demo

# Backtest every bundled scenario (and NAB when present) and print the evaluation table.
eval: $(STAMP)
	$(BIN)/llmwatch eval --nab $(NAB)

# The inner loop: lint, the import contracts and the unit tests; no vLLM, no servers, about
# a minute. A test that needs something missing skips here (and fails in make test).
check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache
	LLMWATCH_TEST_ALLOW_MISSING=1 $(BIN)/pytest -m unit -q

# The full suite that CI runs: every test, with vLLM, the model and the stack's binaries.
test: setup stack-tools
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache
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
