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
# Where `make chaos` / `make soak` write each scenario's figures (JSON lines; tests/CHAOS.md).
CHAOS_REPORT ?= .agentmesh/chaos-figures.jsonl
SOAK_REPORT  ?= .agentmesh/soak-figures.jsonl

.PHONY: browser help install proto proto-check lint typecheck buf-lint test test-only up demo bench bench-quick chaos soak mutate charts chart-readme hadolint clean

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

bench: $(STAMP) ## Run every benchmark; writes the summary table atop bench/RESULTS.md and bench/latency.png
	nice -n 5 $(PY) -m bench $(BENCH_ARGS)

bench-quick: $(STAMP) ## The same in short rounds (a few minutes: checks it all runs, rough figures)
	nice -n 5 $(PY) -m bench --quick $(BENCH_ARGS)

chaos: $(STAMP) ## The full chaos suite: real agent/tool/Redis kills, failovers, faults (figures in CHAOS_REPORT)
	@mkdir -p $(dir $(CHAOS_REPORT)) && rm -f $(CHAOS_REPORT)
	AGENTMESH_CHAOS_REPORT=$(abspath $(CHAOS_REPORT)) $(BIN)/pytest -m chaos -p no:cacheprovider
	@echo "figures: $(CHAOS_REPORT)" && cat $(CHAOS_REPORT)

mutate: $(STAMP) ## Mutation testing of the safety code: mutmut 3 + hand-written Lua mutants, checked against tests/MUTATION.md (40-70 min on 2 cores, niced)
	nice -n 15 $(BIN)/mutmut run --max-children 2
	nice -n 15 $(PY) scripts/lua_mutants.py; lua=$$?; $(PY) scripts/mutation_ledger.py; ledger=$$?; \
	  test $$lua -eq 0 && test $$ledger -eq 0

soak: $(STAMP) ## 10,000 tasks through the local mesh: RSS and Redis memory (AGENTMESH_SOAK_TASKS=n)
	@mkdir -p $(dir $(SOAK_REPORT)) && rm -f $(SOAK_REPORT)
	AGENTMESH_CHAOS_REPORT=$(abspath $(SOAK_REPORT)) $(BIN)/pytest -m soak -p no:cacheprovider
	@echo "figures: $(SOAK_REPORT)" && cat $(SOAK_REPORT)

charts: $(STAMP) ## Chart tests: render, strict lint, schema-validate every manifest
	$(BIN)/pytest tests/charts

chart-readme: $(STAMP) ## Regenerate the values table of charts/agentmesh/README.md from values.yaml
	$(PY) scripts/chart_readme.py

clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist mutants
