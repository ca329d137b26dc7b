# Everything a user or CI runs. Each target installs what it is missing first.
SHELL := /bin/bash
.DEFAULT_GOAL := run
VENV := .venv
TOOLS := .tools
POETRY := $(TOOLS)/bin/poetry
PYTHON := $(VENV)/bin/python
# poetry's own PyPI source asks for per-version JSON pages that some mirrors lack; the plugin
# makes it read the simple index pip already uses (PIP_INDEX_URL, else pip's default).
MIRROR := $(or $(POETRY_PYPI_MIRROR_URL),$(PIP_INDEX_URL),$(shell python3 -c "from pip._internal.models.index import PyPI; print(PyPI.simple_url)" 2>/dev/null))
export POETRY_PYPI_MIRROR_URL := $(MIRROR)
export POETRY_VIRTUALENVS_IN_PROJECT := true
export POETRY_NO_INTERACTION := 1
TORCH_VERSION ?= 2.13.0
MODEL ?= qwen

.PHONY: install install-local install-test-local run run-local test lint check-all load bench clean demo-cluster

$(POETRY):
	python3 -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet "poetry==2.5.1" "poetry-plugin-pypi-mirror==0.6.5"

$(VENV)/.installed: $(POETRY) pyproject.toml poetry.lock
	$(POETRY) install --with dev --compile
	@# PYTHONDONTWRITEBYTECODE may be set: compile our own package once so start-up stays fast.
	$(PYTHON) -m compileall -q chatproxy
	touch $@

install: $(VENV)/.installed

.env:
	cp .env.example .env

# The local model's packages on a GPU host (torch with CUDA from the index).
install-local: install
	$(VENV)/bin/pip install --quiet "torch>=2.4" "transformers>=4.45" "jinja2>=3.1"

# CPU torch for the local provider's tests; pinned, since unpinned pip picks a multi-GB CUDA build.
install-test-local: install
	@$(PYTHON) -c "import torch, transformers, jinja2" 2>/dev/null || \
	  $(VENV)/bin/pip install --quiet "torch==$(TORCH_VERSION)" "transformers>=4.45" "jinja2>=3.1"

run: install .env
	$(PYTHON) -m chatproxy

run-local: install .env
	$(PYTHON) -m chatproxy --local-model $(MODEL)

# nginx (deploy/nginx.conf) in front of two copies sharing PostgreSQL history, answered by
# a fake upstream, all on loopback; prints where to point a browser; Ctrl-C stops it all.
demo-cluster: install
	$(PYTHON) -m deploy.demo_cluster

lint: install install-test-local
	$(VENV)/bin/ruff check chatproxy tests bench deploy
	$(VENV)/bin/mypy

test: install install-test-local lint
	$(VENV)/bin/pytest -q

# Everything that must hold before a release: lint and types, the whole suite (secret guard
# on every test, fault matrix, fuzzing, tests/test_load_short.py against a real process),
# then bench/load.py at a tenth of its counts through wrk when installed, with its verdicts.
check-all: install install-test-local lint
	$(VENV)/bin/pytest -q
	$(PYTHON) bench/load.py --scale 0.1 --idle-wait 0

# bench/load.py at full scale: 20,000 requests, 2,000 streams, 500 disconnects, 64 connections.
load: install
	$(PYTHON) bench/load.py

bench: install install-test-local
	$(PYTHON) bench/overhead.py
	$(PYTHON) bench/streaming.py
	$(PYTHON) bench/local.py
	$(PYTHON) bench/history.py
	$(PYTHON) bench/history_layer.py
	@if command -v valgrind >/dev/null; then $(PYTHON) bench/instructions.py; \
	  else echo "valgrind is not installed: skipping bench/instructions.py"; fi

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache
