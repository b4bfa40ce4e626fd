# Two commands for a new user: `make run` and `make test`. Everything else is in the README and docs/.
PYTHON ?= python3
# Test processes (pytest-xdist): one per core of the two-core machines CI runs on; 0 runs in one process
TEST_PROCESSES ?= 2
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: run test lint typecheck check clean chromium bench load-test wrk

run: $(STAMP)
	$(BIN)/moderation run

# Lint and types first: a change that breaks either fails the suite like a failing test.
test: $(DEV_STAMP) chromium wrk
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest --numprocesses=$(TEST_PROCESSES) --durations=25 $(PYTEST_ARGS)

# The browser tests drive Debian's Chromium (/usr/bin/chromium); as root with apt-get, install it when missing.
chromium:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		command -v chromium || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
			|| echo "Could not install Chromium: the browser tests will be skipped."; \
	else \
		echo "Chromium is missing (as root: apt-get install chromium): the browser tests will be skipped."; \
	fi

# The service against the bare Flask + Celery stack (README "Performance"); BENCH_ARGS=--quick for a smoke run.
bench: $(DEV_STAMP) wrk
	$(BIN)/python -m bench.stack $(BENCH_ARGS)

# Signed comments at a fixed rate for minutes, then the reliability invariant (LOAD_ARGS="--rate 50 --duration 180").
load-test: $(DEV_STAMP)
	$(BIN)/python -m bench.load $(LOAD_ARGS)

# The benchmark's load generator is Debian's wrk; as root with apt-get, install it when missing.
wrk:
	@if command -v wrk >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk) \
			|| echo "Could not install wrk: the stack benchmark needs it."; \
	else \
		echo "wrk is missing (as root: apt-get install wrk): the stack benchmark needs it."; \
	fi

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(DEV_STAMP)
	$(BIN)/mypy

check: lint test

# --clear: an earlier attempt interrupted half-way (Ctrl-C while pip upgraded itself) leaves a broken .venv,
# and make then deletes bin/python, so this runs again: start from an empty folder.
$(VENV)/bin/python:
	$(PYTHON) -m venv --clear $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(DEV_STAMP): pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP) $@

clean:
	rm -rf $(VENV) var build *.egg-info .pytest_cache .mypy_cache .ruff_cache
