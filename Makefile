# Everything runs inside .venv, created from the hash-pinned lock.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo dev test lint format typecheck bench lock clean

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes --no-deps -r requirements.lock
	# The project itself, without touching the locked dependencies.
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m geospatial_pipeline.demo demo

dev: $(STAMP)
	$(BIN)/python -m geospatial_pipeline.demo dev

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy geospatial_pipeline

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: $(STAMP)
	$(BIN)/mypy geospatial_pipeline

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

# Regenerate the lock (needs uv: pip install uv). The lock must name no index host.
lock:
	uv pip compile pyproject.toml --extra local --extra dev --generate-hashes \
	  --python-version 3.11 --no-header -o requirements.lock
	! grep -nE '(https?://|--index-url|--extra-index-url|--find-links)' requirements.lock

clean:
	rm -rf .demo .data .dagster_home
