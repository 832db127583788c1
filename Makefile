# Everything a newcomer needs: `make demo` and `make test`. Each installs what it needs itself.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed
CONFIG ?= config/workspaces.yaml
export PYTHONPATH := $(CURDIR)/plugins:$(CURDIR)

.PHONY: help install lint typecheck unit test validate-config schema demo ui sandbox bench clean

help:
	@echo "make demo             run the main job end to end against the local sandbox"
	@echo "make test             install, validate the shipped config, lint, type-check and run every test"
	@echo "make validate-config  check CONFIG=$(CONFIG) the way the DAG file will"
	@echo "make schema           regenerate config/workspaces.schema.json and docs/configuration.md's field tables"
	@echo "make ui               airflow standalone with the demo DAGs against the sandbox (UI on 127.0.0.1:8080)"
	@echo "make sandbox          serve the local Entra ID / Key Vault / Databricks stand-in"
	@echo "make bench            benchmarks: ours beside the naive script, on the sandbox (about 40 minutes)"
	@echo "make clean            remove the virtualenv and every generated file"

# The virtualenv is rebuilt when a requirements file changes. uv resolves and installs in seconds where
# pip takes minutes; it is installed into the virtualenv itself, so nothing outside the repo changes.
$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade uv
	$(BIN)/uv pip install --python $(PY) --quiet -r requirements-dev.txt
	$(BIN)/uv pip check --python $(PY)
	@touch $(STAMP)

install: $(STAMP)

validate-config: $(STAMP)
	$(PY) -m entra_provisioning validate $(CONFIG)

# The JSON Schema and the field tables of docs/configuration.md are generated from plugins/entra_provisioning/config_fields.py
# (a test fails when the committed copies are stale).
schema: $(STAMP)
	$(PY) -m entra_provisioning schema --write config/workspaces.schema.json --docs docs/configuration.md

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check plugins dags
	$(BIN)/mypy

# The two Airflow-cluster modules (the distributed test and the fault tests) spend most of their time
# waiting on Airflow (schedules, heartbeat and queue timeouts), so `make test` runs each beside the rest
# rather than after it; their output follows the rest's (and stays in .tmp/lane-*.log), and any of the
# three failing fails the target. PYTEST_ARGS=... runs what it names instead, in one pytest.
LANES := tests/e2e/test_distributed.py tests/e2e/test_faults.py
test: $(STAMP) validate-config lint
ifeq ($(strip $(PYTEST_ARGS)),)
	@mkdir -p .tmp
	@pids=""; for lane in $(LANES); do \
		$(BIN)/pytest $$lane > .tmp/lane-$$(basename $$lane .py).log 2>&1 & pids="$$pids $$!"; \
	done; \
	$(BIN)/pytest $(addprefix --ignore=,$(LANES)); status=$$?; \
	for pid in $$pids; do wait $$pid || status=1; done; \
	for lane in $(LANES); do \
		echo "----- $$lane, run beside the rest (.tmp/lane-$$(basename $$lane .py).log) -----"; \
		cat .tmp/lane-$$(basename $$lane .py).log; \
	done; \
	echo "make test: exit $$status"; exit $$status
else
	$(BIN)/pytest $(PYTEST_ARGS)
endif

demo: $(STAMP)
	$(PY) -m demo

# The Airflow UI on 127.0.0.1:$(UI_PORT) with the demo DAGs against the sandbox; Ctrl-C stops everything.
UI_PORT ?= 8080
ui: $(STAMP)
	$(PY) -m demo.ui --port $(UI_PORT)

# Prints the report and writes it to bench/results/; a full run also rewrites docs/benchmarks.md.
# BENCH_ARGS=--quick samples the baseline (its report goes to bench/results/quick.md only).
bench: $(STAMP)
	$(PY) -m bench.run $(BENCH_ARGS)

sandbox: $(STAMP)
	$(PY) -m sandbox serve --seed sandbox/demo_seed.yaml --state-dir .sandbox

clean:
	rm -rf $(VENV) .airflow .sandbox .tmp .pytest_cache .mypy_cache .ruff_cache .hypothesis
