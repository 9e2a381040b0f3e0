# pixfleet: make run | make test | make lint | make type | make fmt | make bench
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: install services migrate run test lint fmt type schema bench loadtest

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

services:
	bash infra/scripts/services.sh

migrate: install services
	$(VENV)/bin/pixfleet migrate

run: install services
	$(VENV)/bin/pixfleet run

test: install services
	$(PY) tests/fetch_images.py
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

fmt: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

type: install
	$(VENV)/bin/mypy

schema: install
	$(PY) -m contracts.schema

loadtest: install services
	$(PY) loadtests/run.py baseline

bench: install
	$(PY) loadtests/bench_thumbnail.py
