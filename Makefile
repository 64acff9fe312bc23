# genjax: `make run` (train the Shakespeare LM on the CPU, print samples), `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
FMNIST_DIR := /usr/share/datasets/fashion-mnist
WORKDIR ?= runs/lm_shakespeare_cpu

.PHONY: run test setup data clean constraints

# constraints.txt pins every package `make test` installs (the versions the goldens and
# bit-exact tests were made with); pyproject.toml keeps the ranges users install from.
# uv installs them (parallel downloads: ~15 s on a fresh machine against pip's ~80 s);
# plain pip takes over where uv cannot run or reach the index. --compile-bytecode: uv
# writes no .pyc by default, and with PYTHONDONTWRITEBYTECODE=1 (this machine's shell)
# Python never does, so every process compiled jax & co. from source: `import genjax.train`
# 6.1-6.9 s without, 1.9-2.8 s with (~20 s more setup, once).
UV_VERSION := 0.13.9
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q uv==$(UV_VERSION) && \
	    $(PY) -m uv pip install -q --compile-bytecode --python $(PY) -c constraints.txt -e '.[test]' || \
	    { $(PY) -m pip install -q --upgrade pip && $(PY) -m pip install -q -c constraints.txt -e '.[test]'; }
	touch $(STAMP)

# Regenerate constraints.txt after changing dependencies (then regenerate the goldens if
# a test says so): the newest versions pyproject.toml allows, in a fresh venv, except
# CONSTRAINTS_HOLD: ml_dtypes 0.7.0 registers its numpy ufunc loops one by one at import
# (quadratic in numpy's loop lists: 0.8-1.4 s of every `import jax` on 2 cores, against
# 5 ms for 0.6.0); the suite starts ~100 JAX processes. Lift it when a release fixes that
# (`python -X importtime -c "import jax" 2>&1 | grep ml_dtypes_ext`).
CONSTRAINTS_HOLD := 'ml_dtypes<0.7'
constraints:
	rm -rf .venv-constraints
	$(PYTHON) -m venv .venv-constraints
	.venv-constraints/bin/python -m pip install -q --upgrade pip
	.venv-constraints/bin/python -m pip install -q -e '.[test]' $(CONSTRAINTS_HOLD)
	{ echo "# make constraints ($$(.venv-constraints/bin/python --version)); do not edit"; \
	  .venv-constraints/bin/python -m pip freeze --exclude-editable; } > constraints.txt
	rm -rf .venv-constraints

setup: $(STAMP) data

# Fashion-MNIST from Debian (root: apt-get; otherwise unpacked into ./data/fashion-mnist).
data:
	@if [ -d $(FMNIST_DIR) ] || [ -d data/fashion-mnist ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	    (apt-get update -qq >/dev/null && apt-get install -y -qq dataset-fashion-mnist >/dev/null)) \
	    || echo "warning: could not install dataset-fashion-mnist"; \
	else mkdir -p data/deb && cd data/deb && apt-get download dataset-fashion-mnist && \
	    dpkg -x dataset-fashion-mnist_*.deb root && mkdir -p ../fashion-mnist && \
	    cp root$(FMNIST_DIR)/* ../fashion-mnist/; fi

# One XLA CPU device per core: data parallelism is how XLA uses both cores on a small model.
run: export XLA_FLAGS ?= --xla_force_host_platform_device_count=$(shell nproc)
run: export JAX_PLATFORMS ?= cpu
run: setup
	$(PY) -m genjax.train --config=configs/lm_shakespeare.py:cpu --workdir=$(WORKDIR)
	$(PY) -m genjax.sample --workdir=$(WORKDIR) --prompt="ROMEO:" --num_samples=3 \
	    --max_new_tokens=300 --temperature=0.8 --top_k=40 --top_p=0.95 --seed=0
	$(PY) -m genjax.evaluate --workdir=$(WORKDIR) --only=text --set=text.temperature=0.8 \
	    --set=text.top_k=40 --set=text.top_p=0.95

test: setup
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs
