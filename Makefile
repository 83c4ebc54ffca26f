# One command per job; each creates the virtual environment on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench clean

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

run: $(BIN)/.installed  ## the critical-time table of the reference problems
	$(BIN)/python -m theory

test: $(BIN)/.installed  ## everything CI runs: lint, then the default (fast) test suite
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest

bench: $(BIN)/.installed  ## benchmarks/critical_time.py (minutes: includes N = 60,000 images)
	$(BIN)/python benchmarks/critical_time.py --out benchmarks/results.json

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
