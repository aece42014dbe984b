# Questline: everything a newcomer needs is `make run` and `make test`.
# Works on a fresh machine with Python 3.11+ and make: the virtual environment is created on
# first use and re-installed whenever pyproject.toml changes.

SHELL := /bin/bash

VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.questline-installed
PIP_LOG := $(VENV)/pip-install.log

# The first interpreter on PATH that is Python 3.11 or newer (override: make PYTHON=...).
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3 python; do \
	if command -v $$p >/dev/null 2>&1 && \
	   $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then \
		echo $$p; break; fi; done)

PACKAGES := server schema ledger members quests campaigns badges redemptions referrals \
	leaderboards webhooks tests bench
# mypy refuses a folder without Python files: lint only the packages that have some.
LINT_PATHS = $(foreach pkg,$(PACKAGES),$(if $(wildcard $(pkg)/*.py),$(pkg)))

.DEFAULT_GOAL := help
.PHONY: help install run test lint bench schema

help:
	@echo "make run     start Questline (embedded PostgreSQL + Redis, API, worker, scheduler)"
	@echo "make test    lint, then the whole test suite"
	@echo "make lint    ruff and mypy"
	@echo "make bench   run every benchmark in bench/"
	@echo "make schema  rewrite schema.graphql from the code (after a deliberate API change)"

$(BIN)/python:
	@if [ -z "$(PYTHON)" ]; then \
		echo "Questline needs Python 3.11 or newer on PATH (python3.11, python3.12, ...)." >&2; \
		exit 1; fi
	@echo "Creating $(VENV) with $(PYTHON)..."
	@$(PYTHON) -m venv $(VENV) || { \
		echo "Could not create a virtual environment; on Debian/Ubuntu install python3-venv." >&2; \
		exit 1; }

# Quiet when it works; the full pip log when it does not.
$(STAMP): pyproject.toml | $(BIN)/python
	@echo "Installing Questline and its development tools into $(VENV) (log: $(PIP_LOG))..."
	@{ $(BIN)/python -m pip install --upgrade pip && \
	   $(BIN)/python -m pip install --editable '.[dev]'; } > $(PIP_LOG) 2>&1 || { \
		cat $(PIP_LOG) >&2; echo "pip install failed (see above)." >&2; exit 1; }
	@touch $@

install: $(STAMP)

run: $(STAMP)
	@$(BIN)/questline dev

lint: $(STAMP)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy $(LINT_PATHS)

test: $(STAMP)
	$(MAKE) --no-print-directory lint
	$(BIN)/python -m pytest

# Every runnable script in bench/ (helpers such as harness.py have no __main__ block).
bench: $(STAMP)
	@set -e; found=0; for script in bench/*.py; do \
		grep -qs '__name__ == "__main__"' "$$script" || continue; found=1; \
		echo "== $$script" >&2; $(BIN)/python "$$script"; \
	done; [ $$found = 1 ] || echo "no benchmarks in bench/ yet" >&2

schema: $(STAMP)
	$(BIN)/python -m schema.export
