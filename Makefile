# Hive: `make run` starts everything, `make test` runs the suite. `make help` lists all.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
# Re-install only when a requirements file changes.
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install run test lint format bench chaos migrate clean

help: ## List every target
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-9s %s\n", $$1, $$2}'

$(STAMP): requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Hive needs Python 3.11 or newer ($(PYTHON))"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install the pinned dependencies

run: $(STAMP) ## Migrate, create the admin, start web, agents, coordinator and Flower
	$(PY) manage.py hive up

# The suite mostly waits on the processes it starts: pytest-xdist runs it on this many
# workers, each with its own test database, Redis database and var/test/<worker>/, a
# test file at a time (a module's shared agent stays one process). TEST_WORKERS=0: serial.
TEST_WORKERS ?= 3
test: $(STAMP) ## Run the whole test suite (real Redis, database and agent processes)
	$(VENV)/bin/pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: $(STAMP) ## Check the code with ruff, the apps' layers with import-linter, and that every model change has its migration
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(PY) manage.py makemigrations --check --dry-run

format: $(STAMP) ## Format the code with ruff
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: $(STAMP) ## Run every benchmark in bench/ and print the table
	$(PY) -m bench

chaos: $(STAMP) ## Run the fault battery (slow scenarios too) and print lost/duplicated/recovered
	$(VENV)/bin/pytest -m chaos -p no:cacheprovider $(PYTEST_ARGS) tests/chaos

migrate: $(STAMP) ## Apply database migrations
	$(PY) manage.py migrate

clean: ## Remove .venv and the embedded state under var/
	rm -rf $(VENV) var
