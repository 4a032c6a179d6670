# Thin targets: each calls the command the README documents.
PYTHON ?= python3
VENV := .venv

.PHONY: setup run demo test test-unit lint typecheck bench

$(VENV)/.runtime: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -r requirements.txt
	touch $@

setup: $(VENV)/.runtime

# Runs the server on the embedded default (no Redis, no Docker) on http://127.0.0.1:5000; prints the login once
run: setup
	SIGNALBOARD_ENV=development ./start.sh

# A terminal subscriber to the demo channels of the server `make run` started (run it in a second terminal)
demo: setup
	SIGNALBOARD_ENV=development LOG_LEVEL=ERROR $(VENV)/bin/flask --app app demo

# Installs everything the whole suite needs (Python, Debian and npm packages), then lints, type-checks and runs it
test:
	./scripts/setup_test_env.sh
	$(MAKE) lint typecheck
	$(VENV)/bin/pytest

test-unit:
	$(VENV)/bin/pytest -m "not integration"

lint:
	$(VENV)/bin/ruff check .

# mypy as pyproject.toml configures it; bench/ is a second run (its scripts import each other from their folder)
typecheck:
	$(VENV)/bin/mypy
	MYPYPATH=bench $(VENV)/bin/mypy --no-explicit-package-bases bench/*.py bench/anchors/*.py

bench: setup
	$(VENV)/bin/python bench/run.py
