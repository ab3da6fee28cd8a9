# One entry point. Every target creates or refreshes .venv and installs what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Pinned so that the local CPU wheel is used and no CUDA packages are pulled.
TORCH_SPEC ?= torch==2.13.0
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=

.PHONY: help serve test bench models docker-smoke clean

help:
	@echo "make serve   - serve the bundled models on $(HOST):$(PORT) (serving dependencies only)"
	@echo "make test    - run the whole test suite"
	@echo "make bench   - run the benchmarks (figures printed and written to results/)"
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
	$(BIN)/python -m pip install -q -e ".[train,loadtest,dev]" "$(TORCH_SPEC)"
	touch $(VENV)/.runtime $@

serve: $(VENV)/.runtime
	$(BIN)/easerve serve --host $(HOST) --port $(PORT)

test: $(VENV)/.dev
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

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
