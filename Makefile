# Two commands do all the set-up from a fresh clone:
#   make demo   install the runtime (CPU) and answer examples/digits.txt with the shipped model
#   make test   install everything (torch 2.13.0 CPU build pinned, serve and ray extras) and run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --quiet --constraint constraints.txt

.PHONY: demo test test-heavy test-slow models bench load gpu-check clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

demo: $(BIN)/python
	$(PIP) '.[cpu]'
	$(BIN)/sead run --input examples/digits.txt

test: $(BIN)/python
	$(PIP) -e '.[cpu,train,dev,serve,ray]'
	$(BIN)/python -m pytest -q

# Tests marked heavy (Ray Serve end to end, about 15 s on 2 cores), skipped by `make test`.
test-heavy: $(BIN)/python
	$(PIP) -e '.[cpu,train,dev,serve,ray]'
	$(BIN)/python -m pytest -q -m heavy

# Long problems at the README's sizes on held-out families (tests/test_slow.py), deselected by `make test`:
# the ones marked slow (CI runs them: pytest -m slow), and the largest sizes, marked slowest.
test-slow: $(BIN)/python
	$(PIP) -e '.[cpu,train,dev,serve,ray]'
	$(BIN)/python -m pytest -q -m "slow or slowest"

# Retrain and re-export the shipped default models (seeds in train/recipes.py; ~10 minutes on 2 cores).
models: $(BIN)/python
	$(PIP) -e '.[cpu,train,dev]'
	$(BIN)/python -m sead.export.ship addition parity rule110

bench: $(BIN)/python
	$(PIP) -e '.[cpu,train,dev]'
	$(BIN)/sead bench --engine ort

# Load on `sead serve` and `sead run --ray` (about 4 minutes): bench/results/load.json and ray.json.
load: $(BIN)/python
	$(PIP) -e '.[cpu,dev,serve,ray]'
	$(BIN)/python bench/load.py
	$(BIN)/python bench/ray_run.py

# On a machine with an NVIDIA GPU, after: pip install '.[cuda,tensorrt]'
gpu-check:
	$(BIN)/python bench/gpu_check.py

clean:
	rm -rf $(VENV) build *.egg-info bench/out
