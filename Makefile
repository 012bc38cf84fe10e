# FraudFlow — two commands on a fresh machine: `make demo` (the main job), `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup test lint demo up stop bench chaos clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy core components features ingest serving workflows monitoring benchmarks fraudflow tests

test: setup lint
	$(BIN)/pytest -q

demo: setup
	$(BIN)/python -m fraudflow.demo

up: setup
	$(BIN)/python -m fraudflow.demo up

stop: setup
	$(BIN)/python -m fraudflow.demo stop

bench: setup
	$(BIN)/fraudflow bench all --out bench/results.json

chaos: setup
	$(BIN)/python -m fraudflow.chaos

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
