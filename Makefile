# pixfleet: make run | make test | make lint | make type | make fmt | make lock | make bench
VENV ?= .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
PYTHON ?= python3
LOCK := requirements/lock.txt
# One universal resolution for every supported Python and platform; hashes for every file.
COMPILE = $(UV) pip compile pyproject.toml --extra dev --universal --python-version 3.11 \
	--generate-hashes --no-header --quiet

.PHONY: install services migrate run test lint fmt type schema bench loadtest lock lock-upgrade lock-check

# Installs exactly the lock (hash-checked), then the project itself without resolving anything.
$(VENV)/.installed: pyproject.toml $(LOCK) requirements/bootstrap.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --no-deps --require-hashes -r requirements/bootstrap.txt
	$(UV) pip sync -q --python $(PY) --require-hashes $(LOCK)
	$(UV) pip install -q --python $(PY) --no-deps --no-build-isolation -e .
	touch $@

install: $(VENV)/.installed

# uv itself is pinned twice: in the lock (so `pip sync` keeps it) and, with hashes, for pip.
BOOTSTRAP = grep '^uv==' $(LOCK) | cut -d' ' -f1 | $(UV) pip compile - --universal \
	--python-version 3.11 --generate-hashes --no-header --quiet -o requirements/bootstrap.txt

lock: install
	$(COMPILE) -o $(LOCK)
	$(BOOTSTRAP)

lock-upgrade: install
	$(COMPILE) --upgrade -o $(LOCK)
	$(BOOTSTRAP)

# The lock matches pyproject.toml when re-resolving with its own pins as preferences changes nothing.
lock-check: install
	@tmp=$$(mktemp) && cp $(LOCK) $$tmp && $(COMPILE) -o $$tmp && \
	  if diff -u $(LOCK) $$tmp; then echo "lock: matches pyproject.toml"; rm -f $$tmp; \
	  else echo "lock: stale, run make lock" >&2; rm -f $$tmp; exit 1; fi

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
	$(PY) loadtests/bench_ops.py
