# Makefile snippet for the integrator (issue 9): replaces the placeholder `serve` target and adds
# `bento`, `bento-gpu` and `load-test`. BentoML keeps its models and bentos in $(BENTOML_HOME)
# (./bentoml_home, git-ignored); the MLflow registry is the embedded sqlite store unless
# MLFLOW_TRACKING_URI says otherwise. Telemetry is already off at the top of the Makefile.
export BENTOML_HOME ?= $(CURDIR)/bentoml_home
SERVE_HOST ?= 127.0.0.1
SERVE_PORT ?= 3000

.PHONY: serve bento bento-gpu bento-models load-test

bento-models: install  ## import the registry's champion models into BentoML (writes bento/serving.json)
	PYTHONPATH=src $(BIN)/python bento/import_models.py

serve: bento-models  ## serve the registered champion models with BentoML on 127.0.0.1:3000
	cd bento && PYTHONPATH=$(CURDIR)/src $(BIN)/bentoml serve service:Covidscan --host $(SERVE_HOST) --port $(SERVE_PORT)

build/wheels/.built: pyproject.toml $(shell find src -name '*.py')
	$(BIN)/python -m pip wheel -q --no-deps --no-build-isolation -w build/wheels .
	@touch $@

bento: bento-models build/wheels/.built  ## build the CPU bento (bentoml build; CPU torch, pinned requirements, no uv lock)
	PYTHONPATH=src $(BIN)/bentoml build -f bento/bentofile.yaml bento/

bento-gpu: bento-models build/wheels/.built  ## build the GPU bento (CUDA 12.6 torch and base image); containerize it on a GPU host
	PYTHONPATH=src $(BIN)/bentoml build -f bento/bentofile.gpu.yaml bento/

load-test: install  ## bounded loopback load test of a running `make serve` (p50/p99 latency, throughput)
	PYTHONPATH=src:. $(BIN)/python benchmarks/load_test.py --url http://$(SERVE_HOST):$(SERVE_PORT)
