# signsym_det developer tasks. CI (.ci/run) runs `make test`.
#
#   make setup   create .venv (git-ignored) with torch, detectron2 and this package (editable)
#   make test    setup + ruff check + ruff format --check + pytest
#   make demo    setup + tools/demo.py
#   make bench   setup + tools/benchmark.py: rule cost vs stock backprop (BENCH_ARGS=--quick: < 3 min)
#
# Variables: PYTHON (base interpreter, default python3), VENV (default .venv),
# TORCH_PACKAGES (the torch/torchvision pair), DETECTRON2_SPEC (see tools/install_detectron2.py),
# PIP_QUIET (set empty for pip's full output), PYTEST_ARGS, PYTEST_WORKERS (pytest-xdist
# processes, default 2; 0 = in-process).
#
# A second environment with the official detectron2 (C++ ops built on CPU: ~5 CPU-minutes, up
# to 30 min on a busy 2-core machine; the wheel of a local archive is cached, so only once):
#   make test VENV=.venv-official DETECTRON2_SPEC=path/to/detectron2-main.tar.gz
# or, with GitHub access (built by pip each time setup reruns, not cached):
#   make test VENV=.venv-official \
#       DETECTRON2_SPEC='git+https://github.com/facebookresearch/detectron2.git'

PYTHON ?= python3
VENV ?= .venv
TORCH_PACKAGES ?= torch==2.14.1 torchvision==0.29.1
DETECTRON2_SPEC ?=
PIP_QUIET ?= -q
PYTEST_ARGS ?=
# pytest-xdist workers (one per core; each runs torch on one thread: tests/conftest.py)
PYTEST_WORKERS ?= 2

SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
# Drops one line of noise from pip: some machines' pip config lists local indexes that
# lack most projects, and pip warns about each. Everything else (errors too) is shown.
PIP_NOISE_FILTER ?= 2>&1 | sed -u '/is ignored: it is neither a file nor a directory/d'

VENV_PY := $(VENV)/bin/python
PIP := $(VENV_PY) -m pip
RUFF := $(VENV)/bin/ruff
# Setup is redone only when one of its inputs changes; a second `make setup` takes seconds.
STAMP := $(VENV)/.signsym_det-setup
SPEC_STAMP := $(VENV)/.signsym_det-detectron2-spec

.PHONY: setup test lint format demo bench clean distclean FORCE

setup: $(STAMP)

$(VENV_PY):
	$(PYTHON) -m venv $(VENV)

# Rewritten (so setup reruns) only when DETECTRON2_SPEC changes.
$(SPEC_STAMP): FORCE | $(VENV_PY)
	@printf '%s\n' '$(DETECTRON2_SPEC)' | cmp -s - $@ || printf '%s\n' '$(DETECTRON2_SPEC)' > $@

# $(wildcard ...): a local DETECTRON2_SPEC file that changes also reruns setup.
$(STAMP): pyproject.toml tools/install_detectron2.py tools/detectron2_patches.py \
		tools/detectron2_probe.py Makefile $(SPEC_STAMP) $(wildcard $(DETECTRON2_SPEC)) | $(VENV_PY)
	$(PIP) install $(PIP_QUIET) --upgrade pip 'setuptools>=64' wheel $(PIP_NOISE_FILTER)
	$(PIP) install $(PIP_QUIET) $(TORCH_PACKAGES) $(PIP_NOISE_FILTER)
	DETECTRON2_SPEC='$(DETECTRON2_SPEC)' $(VENV_PY) tools/install_detectron2.py $(PIP_NOISE_FILTER)
	$(PIP) install $(PIP_QUIET) --no-build-isolation -e '.[test]' $(PIP_NOISE_FILTER)
	$(VENV_PY) tools/install_detectron2.py --check
	@touch $@
	@echo "setup done: $(VENV) is ready"

test: setup
	@status=0; \
	echo '$$ ruff check .'; $(RUFF) check . || status=1; \
	echo '$$ ruff format --check .'; $(RUFF) format --check . || status=1; \
	echo '$$ pytest -q -n $(PYTEST_WORKERS) $(PYTEST_ARGS)'; \
		$(VENV_PY) -m pytest -q -n $(PYTEST_WORKERS) $(PYTEST_ARGS) || status=1; \
	exit $$status

lint: setup
	$(RUFF) check .
	$(RUFF) format --check .

# Formats and import-sorts the whole tree: mind other people's files.
format: setup
	$(RUFF) check --select I --fix .
	$(RUFF) format .

demo: setup
	$(VENV_PY) tools/demo.py

bench: setup
	$(VENV_PY) tools/benchmark.py $(BENCH_ARGS)

clean:
	rm -rf .pytest_cache .ruff_cache build dist *.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)

FORCE:
