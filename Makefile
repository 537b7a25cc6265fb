# agentmesh — run `make help` for the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
STAMP  := $(VENV)/.installed
# The CI subset (DESIGN.md): unit, integration, contract, e2e and fast chaos.
PYTEST_ARGS ?= -m "not slow and not soak"

.PHONY: browser help install proto proto-check lint typecheck buf-lint test test-only up demo bench chaos soak charts chart-readme hadolint clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install agentmesh with the [dev] extra

proto: $(STAMP) ## Regenerate agentmesh/v1 from proto/ (grpcio-tools + mypy-protobuf)
	$(PY) scripts/gen_proto.py

proto-check: $(STAMP) ## Fail if the committed generated code differs from a regeneration
	$(PY) scripts/gen_proto.py --check

buf-lint: $(STAMP) ## buf lint (STANDARD) on proto/
	cd proto && ../$(BIN)/buf lint

lint: $(STAMP) ## ruff check + format check + the layer contracts (import-linter) + dependencies (deptry)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/deptry .

typecheck: $(STAMP) ## mypy (strict on agentmesh/, generated code excluded)
	$(BIN)/mypy

hadolint: $(STAMP) ## Lint the Dockerfile
	$(BIN)/hadolint Dockerfile

test: $(STAMP) ## Everything CI runs: lint, typecheck, buf lint, proto-check, hadolint, pytest (CI subset)
	$(MAKE) --no-print-directory lint typecheck buf-lint proto-check hadolint
	$(MAKE) --no-print-directory test-only

test-only: $(STAMP) browser ## Only pytest (CI subset); PYTEST_ARGS=... to change the selection
	AGENTMESH_CHROMIUM=$(CHROMIUM) $(BIN)/pytest $(PYTEST_ARGS)

# The console's browser tests drive the Debian package `chromium` (Playwright cannot download
# its own browser here). Found, or installed when running as root with apt-get; else a plain failure.
CHROMIUM ?= /usr/bin/chromium
browser: ## Find or install the system Chromium for the console's browser tests
	@if [ -x "$(CHROMIUM)" ]; then \
	  echo "chromium: $(CHROMIUM)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "chromium: not found at $(CHROMIUM); installing the Debian package (apt-get)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	    && [ -x "$(CHROMIUM)" ] \
	    || { echo "chromium: apt-get could not install it; install the Debian package chromium or set CHROMIUM=/path/to/chromium"; exit 1; }; \
	else \
	  echo "chromium: not found at $(CHROMIUM) and cannot install it here (needs root and apt-get); install the Debian package chromium or set CHROMIUM=/path/to/chromium"; \
	  exit 1; \
	fi

up: $(STAMP) ## Start the local mesh and run the demo stories (Ctrl-C to stop)
	$(BIN)/agentmesh up --demo

demo: $(STAMP) ## Run the demo stories against a running mesh (`make up` in another shell)
	$(BIN)/agentmesh demo

bench: $(STAMP) ## Run the benchmarks and print the ratios (recorded in bench/RESULTS.md)
	$(PY) -m bench

chaos: $(STAMP) ## The full chaos suite (kills, restarts, fuzzing)
	$(BIN)/pytest -m chaos -p no:cacheprovider

soak: $(STAMP) ## Long soak runs
	$(BIN)/pytest -m soak -p no:cacheprovider

charts: $(STAMP) ## Chart tests: render, strict lint, schema-validate every manifest
	$(BIN)/pytest tests/charts

chart-readme: $(STAMP) ## Regenerate the values table of charts/agentmesh/README.md from values.yaml
	$(PY) scripts/chart_readme.py

clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist
