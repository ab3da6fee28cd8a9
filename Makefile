# One entry point. Every target creates or refreshes .venv and installs what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Pinned so that the local CPU wheel is used and no CUDA packages are pulled.
TORCH_SPEC ?= torch==2.13.0
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=
# The peers of `easerve bench serve --peers` (LitServe, Triton via PyTriton), in their own
# environment: PyTriton pins numpy below 2.
PEERS_VENV ?= build/peers

.PHONY: help serve test browser peers lint bench models docker-smoke clean

help:
	@echo "make serve   - serve the bundled models on $(HOST):$(PORT) (serving dependencies only)"
	@echo "make test    - run the whole test suite"
	@echo "make lint    - ruff (lint + format check) and the import-layer contract (.importlinter)"
	@echo "make bench   - run the benchmarks (figures printed and written to results/)"
	@echo "make peers   - build the environment of bench serve's peers (LitServe, Triton via PyTriton)"
	@echo "make models  - list the model registry"
	@echo "make docker-smoke - build the image, docker compose up, real requests, short load test"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[train,loadtest,dev,browser,ray]" "$(TORCH_SPEC)"
	touch $(VENV)/.runtime $@

serve: $(VENV)/.runtime
	$(BIN)/easerve serve --host $(HOST) --port $(PORT)

# The web console's tests drive Debian's headless Chromium (no browser download); as root (CI,
# the dev machines) it is installed here when missing, elsewhere those tests skip and say why.
BROWSER_PACKAGES := chromium chromium-driver

test: $(VENV)/.dev browser peers
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

peers: $(PEERS_VENV)/.installed

$(PEERS_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install -q --upgrade pip
	$(PEERS_VENV)/bin/python -m pip install -q -e ".[peers]"
	touch $@

browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(BROWSER_PACKAGES); } || \
	  echo "no chromium here: the browser tests will skip"

# import-linter reads packages from disk, so it is pointed at the installed layout: a tree where
# each top-level folder is linked in as a subpackage of easerve, as the wheel lays them out.
IMPORT_TREE := build/import-tree
LAYOUT_FOLDERS := model_defs training export artifacts service bench loadtest

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	rm -rf $(IMPORT_TREE) && mkdir -p $(IMPORT_TREE)/easerve
	cp easerve/*.py $(IMPORT_TREE)/easerve/
	for folder in $(LAYOUT_FOLDERS); do ln -s $(CURDIR)/$$folder $(IMPORT_TREE)/easerve/$$folder; done
	cd $(IMPORT_TREE) && PYTHONPATH=. $(CURDIR)/$(BIN)/lint-imports $(CURDIR)/.importlinter

bench: $(VENV)/.dev
	$(BIN)/easerve bench attention
	$(BIN)/easerve bench backends
	$(BIN)/easerve bench serve

models: $(VENV)/.dev
	$(BIN)/easerve models

docker-smoke:
	bash docker/smoke.sh

clean:
	rm -rf $(VENV) .pytest_cache results
