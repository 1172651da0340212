# make demo : set up .venv and run the main job on the embedded default.
# make test : set up .venv (with the optional torch extra) and run the test suite.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# The persistent compilation cache: the second run of anything skips most compiles.
export JAX_COMPILATION_CACHE_DIR ?= $(CURDIR)/.cache/jax
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS ?= 0
# glibc malloc on transparent huge pages (recnet_jax.runtime.use_huge_pages; about 10% faster).
export GLIBC_TUNABLES ?= glibc.malloc.hugetlb=1

.PHONY: demo test bench setup setup-torch clean

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

$(VENV)/.installed-torch: $(VENV)/.installed requirements-torch.txt
	$(PY) -m pip install -q -r requirements-torch.txt
	touch $@

setup: $(VENV)/.installed
setup-torch: $(VENV)/.installed-torch

# The embedded default: build the synthetic data (once), train configs/demo.py (a rerun resumes or
# finds the run finished), then report on the held-out images. Everything lands in runs/demo/.
demo: $(VENV)/.installed
	test -f data_dir/synthetic/1.1.0/dataset_info.json || \
	  $(PY) -m recnet_jax.data.build --dataset synthetic --data_dir data_dir
	$(PY) -m recnet_jax.main --config configs/demo.py --workdir runs/demo
	$(PY) -m recnet_jax.demo --config configs/demo.py --workdir runs/demo

test: $(VENV)/.installed-torch
	JAX_PLATFORMS=cpu $(PY) -m pytest -q -n 2 --dist loadfile

# JAX and the PyTorch twin side by side; each configuration in its own process (minutes on 2 cores).
bench: $(VENV)/.installed-torch
	JAX_PLATFORMS=cpu $(PY) -m recnet_jax.bench --sizes 256,512,1024,2048 --train --torch \
		--out bench_results/model.json

clean:
	rm -rf .cache .pytest_cache out bench_results runs
