# covidscan: the two commands a new user needs are `make demo` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)
# Telemetry off everywhere (MLflow, BentoML, DVC, Great Expectations).
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
export BENTOML_DO_NOT_TRACK := True
export DVC_NO_ANALYTICS := 1
export GX_ANALYTICS_ENABLED := false
export PIP_DISABLE_PIP_VERSION_CHECK := 1
MLFLOW_PORT ?= 5000

.PHONY: help install demo test test-fast repro realdata push mlflow-ui serve bento lock salt clean distclean annotate browser postgres

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q --no-deps -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	@touch $@

install: $(VENV)/.installed  ## create .venv and install the pinned dependencies (CPU torch)

salt: install  ## create the de-identification salt outside the repository if none is set
	@$(BIN)/covidscan salt init --quiet

repro: install salt  ## run the DVC pipeline (only what changed)
	$(BIN)/dvc repro

REALDATA ?= ../shared/realdata-dev
realdata: install salt  ## real images only (REALDATA=folder in realdata-dev's format): dvc import-url it, profile realdata, dvc repro
	@test -f "$(REALDATA)/manifest.csv" || { echo "error: $(REALDATA)/manifest.csv: not found (REALDATA=<a folder with manifest.csv>; docs/REALDATA.md)" >&2; exit 2; }
	@test -e data/raw/realdata-dev.dvc || { mkdir -p data/raw && $(BIN)/dvc import-url "$(abspath $(REALDATA))" data/raw/realdata-dev; }
	@sed -i 's/^profile: .*/profile: realdata/' params.yaml && echo "params.yaml: profile: realdata (set it back to demo for the synthetic demo)"
	$(BIN)/dvc repro
	$(BIN)/dvc metrics show

push: install  ## push DVC-tracked data and models to the configured remote (local by default)
	$(BIN)/dvc push -q

demo: install salt  ## install, generate the synthetic data, run `dvc repro` end to end, push, say where to look
	@start=$$(date +%s); \
	$(BIN)/dvc repro && $(BIN)/dvc push -q && \
	echo "" && \
	echo "covidscan demo finished in $$(( $$(date +%s) - start )) s (pipeline; install not counted)." && \
	echo "  results:   data/ (manifest, splits, processed), models/, reports/, metrics/ ; dvc metrics show" && \
	echo "  MLflow UI: make mlflow-ui  ->  http://127.0.0.1:$(MLFLOW_PORT)" && \
	echo "  serving:   make serve  (BentoML on http://127.0.0.1:3000, the registry champions; docs/SERVING.md)" && \
	echo "  research use only; not a medical device."

test: install plots-vendor browser postgres  ## the whole test suite, offline, no GPU (plots-vendor: the pinned vega libraries, for the offline-plots test)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

# The scaling tests (tests/scaling, tests/pipeline/test_repro.py) start a throwaway PostgreSQL server
# (initdb + pg_ctl in a temporary folder) for Optuna's RDB storage and an MLflow tracking server.
# Debian's postgresql package provides the binaries; installed here when missing (as root, or with sudo -n).
postgres:  ## PostgreSQL server binaries for the scaling tests (apt-get install postgresql when initdb is missing)
	@if command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then :; \
	else echo "installing PostgreSQL (Debian package postgresql) for the scaling tests"; \
	  { if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null; \
	    else sudo -n apt-get update -qq && sudo -n DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null; fi; } \
	  || echo "PostgreSQL not installed (apt-get install postgresql): the PostgreSQL tests will skip (docs/SCALING.md)"; fi

test-fast: install  ## the inner loop: every test not marked slow (no dvc repro, no bentoml serve), two workers
	$(BIN)/python -m pytest -q -n 2 -m "not slow"

# Headless Chromium from Debian's packages for the browser tests (offline plots, the annotation platform);
# never a browser downloaded by Playwright. Without root or apt the tests that need it skip.
browser:  ## install Debian's chromium for the browser tests when it is missing (apt-get)
	@command -v chromium >/dev/null 2>&1 || { if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else sudo -n apt-get update -qq && sudo -n DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; fi; } \
	  || echo "chromium not installed (apt-get install chromium): the browser tests will skip"

ANNOTATE_PORT ?= 8600
annotate: install salt  ## the annotation platform on 127.0.0.1 over data/interim/ingest (accounts: covidscan annotate add-user; docs/ANNOTATION.md)
	$(BIN)/covidscan annotate serve --ingest data/interim/ingest --host 127.0.0.1 --port $(ANNOTATE_PORT)

mlflow-ui: install  ## open the MLflow UI on 127.0.0.1 over the embedded sqlite store
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port $(MLFLOW_PORT)

export BENTOML_HOME ?= $(CURDIR)/bentoml_home
SERVE_HOST ?= 127.0.0.1
SERVE_PORT ?= 3000

.PHONY: bento-gpu bento-models load-test

bento-models: install  ## import the registry's champion models into BentoML (writes bento/serving.json)
	PYTHONPATH=src $(BIN)/python bento/import_models.py

serve: bento-models  ## serve the registered champion models with BentoML on 127.0.0.1:3000
	cd bento && PYTHONPATH=$(CURDIR)/src $(CURDIR)/$(BIN)/bentoml serve service:Covidscan --host $(SERVE_HOST) --port $(SERVE_PORT)

build/wheels/.built: pyproject.toml $(shell find src -name '*.py')
	$(BIN)/python -m pip wheel -q --no-deps --no-build-isolation -w build/wheels .
	@touch $@

bento: bento-models build/wheels/.built  ## build the CPU bento (bentoml build; CPU torch, pinned requirements, no uv lock)
	$(call bento_build,bentofile.yaml)

bento-gpu: bento-models build/wheels/.built  ## build the GPU bento (CUDA 12.6 torch and base image); containerize it on a GPU host
	$(call bento_build,bentofile.gpu.yaml)

# `bentoml build` refuses a build file whose absolute path has a dot-folder ("hidden files"), so a
# checkout under e.g. ~/.work/covidscan could not build. Build from a copy of what the bentofile names
# (bento/, requirements.lock, build/wheels) in a fresh temporary folder; the bento is the same.
define bento_build
	@stage=$$(mktemp -d -t covidscan-bento.XXXXXX) && trap 'rm -rf "$$stage"' EXIT && \
	case "$$stage" in */.*) echo "error: $$stage has a dot-folder, which bentoml build refuses; set TMPDIR to a folder without one" >&2; exit 2;; esac && \
	mkdir -p "$$stage/build" && cp -R bento "$$stage/bento" && cp -R build/wheels "$$stage/build/wheels" && cp requirements.lock "$$stage/" && \
	cd "$$stage" && echo "bentoml build -f bento/$(1) bento/  (in $$stage)" && \
	PYTHONPATH=$(abspath src) $(abspath $(BIN))/bentoml build -f bento/$(1) bento/
endef

load-test: install  ## bounded loopback load test of a running `make serve` (p50/p99 latency, throughput)
	PYTHONPATH=src:. $(BIN)/python benchmarks/serve_latency.py --url http://$(SERVE_HOST):$(SERVE_PORT)

# Offline DVC plots: `dvc plots show` alone writes a page that loads vega from a CDN (blank without a
# network). These fetch the pinned vega, vega-lite and vega-embed (npm registry) once into vendor/vega
# (git-ignored) and inline them into the page (covidscan.evaluation.plots_page).
.PHONY: plots plots-vendor

plots-vendor: install  ## fetch the pinned vega libraries (npm) into vendor/vega, for offline plots
	$(BIN)/covidscan plots --no-show

plots: install  ## write the ROC/PR plots of every experiment to dvc_plots/index.html (self-contained, offline)
	$(BIN)/covidscan plots

lock:  ## regenerate requirements.lock from a fresh resolve (maintainers)
	@echo "Resolve in a scratch venv, then: pip freeze | sed 's/+cpu//' > requirements.lock (see README, Dependencies)."

clean:  ## remove pipeline outputs (keeps .venv, the DVC cache and mlflow.db)
	rm -rf build data models reports metrics

distclean: clean  ## also remove .venv, mlflow.db, artifacts and the local DVC remote
	rm -rf $(VENV) mlflow.db mlartifacts dvc-remote .dvc/cache vendor dvc_plots
