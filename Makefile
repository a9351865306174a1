# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Both create .venv and install the package with the pinned dependencies first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast lint bench server clean

install: $(STAMP)

# torch first, the CPU build: on Linux, PyPI's torch wheel brings several GB of CUDA libraries.
# Where pip finds a local CPU wheel (this project's machines) TORCH_INDEX can stay empty;
# elsewhere `make TORCH_INDEX=https://download.pytorch.org/whl/cpu demo` takes PyTorch's CPU index.
TORCH_INDEX ?=
$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PIP) install -c requirements.lock -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m deeppert.demo

# Two pytest workers, each taking whole test files (module fixtures such as a sweep run once);
# most slow tests wait on servers and subprocesses, so two share the 2 cores well. Files run in
# collection order, which tests/conftest.py sets to the slow files first and the quick ones
# last (--no-loadscope-reorder: xdist's own order, most tests first, left the one-test files
# that take minutes for the end). No test changes machine-wide state: the PostgreSQL restart
# test restarts a cluster of its own.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m pytest -q --timeout=900 -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow and not ray and not mlflow and not postgres"

lint: $(STAMP)
	$(VENV)/bin/ruff check deeppert ray_jobs mlflow_server tests bench

# Speed as ratios against a reference in the same process; results land in bench/results/.
bench: $(STAMP)
	$(PY) bench/bench_training.py
	$(PY) bench/bench_attribution.py
	$(PY) bench/bench_targets.py --permutations 1000
	$(PY) bench/bench_sweep.py

server: $(STAMP)
	$(PY) -m deeppert server

clean:
	rm -rf $(VENV) runs mlruns mlartifacts demo_out .pytest_cache
