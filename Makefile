# make demo : set up .venv and run the main job on the embedded default.
# make test : set up .venv (with the optional torch extra) and run the test suite.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# The persistent compilation cache: the second run of anything skips most compiles.
export JAX_COMPILATION_CACHE_DIR ?= $(CURDIR)/.cache/jax
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS ?= 0

.PHONY: demo test bench setup setup-torch clean

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	touch $@

$(VENV)/.installed-torch: $(VENV)/.installed requirements-torch.txt
	$(PY) -m pip install -q -r requirements-torch.txt
	touch $@

setup: $(VENV)/.installed
setup-torch: $(VENV)/.installed-torch

demo: $(VENV)/.installed
	$(PY) -m recnet_jax.demo --out out/demo

test: $(VENV)/.installed-torch
	JAX_PLATFORMS=cpu $(PY) -m pytest -q

bench: $(VENV)/.installed
	JAX_PLATFORMS=cpu $(PY) -m recnet_jax.bench --out bench_results/model.json

clean:
	rm -rf .cache .pytest_cache out bench_results
