# Two commands on a fresh machine: `make run` and `make test`. `make` lists the rest.
# The interpreter the virtual environment is made from (`make PYTHON=/path/to/python3 ...`
# chooses another): the system's /usr/bin/python3 where it is 3.11 or newer and can make a
# virtual environment, else the python3 on the PATH. Distributions build theirs with
# profile-guided and link-time optimisation; on a plain source build (pyenv's default) this
# product took 10–20% longer end to end (docs/decisions/042-an-optimised-interpreter.md).
SYSTEM_PYTHON := $(shell /usr/bin/python3 -c 'import sys, ensurepip, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && echo /usr/bin/python3)
PYTHON ?= $(or $(SYSTEM_PYTHON),python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help run test test-fast lint typecheck check bench bench-scaleout soak browsers clean

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $(STAMP)

run: $(STAMP)  ## Run the whole product (web, worker, embedded Redis, SQLite, demo users)
	$(BIN)/python -m config.runstack

# The stock Ably AI Transport client the Ably tests drive (tests/ably/node), when npm is here.
NODE_DEPS := tests/ably/node/node_modules/.package-lock.json
$(NODE_DEPS): tests/ably/node/package-lock.json
	if command -v npm >/dev/null; then npm ci --prefix tests/ably/node --no-audit --no-fund; fi

test: $(STAMP) $(NODE_DEPS)  ## Run the test suite (unit, integration, protocol, browser)
	$(BIN)/python -m pytest

test-fast: $(STAMP)  ## Unit tests only
	$(BIN)/python -m pytest tests/unit

lint: $(STAMP)  ## ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)  ## mypy
	$(BIN)/mypy

check: lint typecheck test  ## Everything CI runs

bench: $(STAMP)  ## Benchmarks; figures in bench/results and docs/performance.md
	$(BIN)/python -m bench.run

# Scale-out: N web + M worker processes per level, e.g. make bench-scaleout LEVELS=1x1,2x2 DATABASES=sqlite,postgres
LEVELS ?= 1x1,2x2
DATABASES ?= sqlite
bench-scaleout: $(STAMP)  ## Scale-out benchmark: saturation and send-ack latency per process count
	$(BIN)/python -m bench.scaleout --levels $(LEVELS) --databases $(DATABASES)

SOAK_MINUTES ?= 3
soak: $(STAMP)  ## Soak: concurrent turns, devices dropping at random, for SOAK_MINUTES (3); nothing lost, memory bounded
	$(BIN)/python -m bench.soak --minutes $(SOAK_MINUTES)

clean:  ## Remove the virtualenv and local databases
	rm -rf $(VENV) db.sqlite3* test-db*.sqlite3*
