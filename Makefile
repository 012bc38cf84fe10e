# FraudFlow — two commands on a fresh machine: `make demo` (the main job), `make test`.
# Both do all their own set-up: system packages (scripts/setup-machine), the venv with the
# locked dependency versions (constraints.txt), the components they start.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup setup-spark machine test conformance lint demo up stop bench chaos lock clean

setup: machine $(VENV)/.installed

machine:
	@scripts/setup-machine

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $@

# The [spark] extra: OpenMLDB's batch engine for `make conformance` and the Spark executor.
setup-spark: $(VENV)/.installed-spark

$(VENV)/.installed-spark: $(VENV)/.installed
	$(BIN)/pip install -q -c constraints.txt -e '.[dev,spark]'
	touch $@

# Re-resolve every dependency to the newest versions pyproject.toml allows and lock them.
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install -q --upgrade pip
	.venv-lock/bin/pip install -q -e '.[dev,spark]'
	.venv-lock/bin/pip freeze --exclude-editable | grep -v '^-e ' > constraints.txt
	rm -rf .venv-lock
	@echo "constraints.txt updated: run make test, then commit it"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy core components features ingest serving workflows monitoring benchmarks fraudflow tests
	$(BIN)/lint-imports

test: setup lint
	$(BIN)/pytest -q -m "not conformance"

# The embedded engine against OpenMLDB's own batch engine (Spark, local mode): heavy, so apart.
conformance: setup-spark
	$(BIN)/pytest -q -m conformance tests/conformance

demo: setup
	$(BIN)/python -m fraudflow.demo

up: setup
	$(BIN)/python -m fraudflow.demo up

stop: setup
	$(BIN)/python -m fraudflow.demo stop

bench: setup-spark
	$(BIN)/fraudflow bench all --out bench/results.json

chaos: setup
	$(BIN)/python -m fraudflow.chaos

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
