# Fresh machine with Python 3.11: `make demo` or `make test`. Each sets up its own .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench bench-quick sandbox clean

# The bench extra too: the suite runs every benchmark once at a tiny size (Apprise's too).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/backchannel demo

sandbox: $(STAMP)
	$(BIN)/backchannel sandbox

lint: $(STAMP)
	$(BIN)/ruff check router channels config tests bench examples docs

typecheck: $(STAMP)
	$(BIN)/mypy

# One test process per core, at most 4 (each starts its own PostgreSQL cluster);
# `pytest` alone runs them in one process.
unit: $(STAMP)
	$(BIN)/pytest -n auto --maxprocesses 4

test: lint typecheck unit

# Every benchmark in one table, which says how long it took (--quick: under a minute).
bench: $(STAMP)
	$(BIN)/python -m bench.run

bench-quick: $(STAMP)
	$(BIN)/python -m bench.run --quick

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
