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
	# The image's lock: runtime dependencies only, at the versions of requirements.lock.
	uv pip compile pyproject.toml -c requirements.lock --generate-hashes \
	  --python-version 3.11 --no-header -o requirements-runtime.lock
	! grep -nE '(https?://|--index-url|--extra-index-url|--find-links)' requirements-runtime.lock

clean:
	rm -rf .demo .data .dagster_home

# ---------------------------------------------------------------- deployment checks
# helm/, terraform/, deploy/ and the Dockerfile, offline (tests/test_deploy_*.py, also
# part of `make test`). Terraform checks are skipped where terraform is not installed.
CHECKOV_VENV := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed

.PHONY: checkov-venv checkov-lock helm-check tf-check deploy-check

# checkov in its own environment, from its own hash-pinned lock: it pins many packages
# that must not meet the project's.
checkov-venv: $(CHECKOV_STAMP)

$(CHECKOV_STAMP): tools/checkov/requirements.lock
	rm -rf $(CHECKOV_VENV)
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --require-hashes --no-deps -r tools/checkov/requirements.lock
	touch $(CHECKOV_STAMP)

# Regenerate checkov's lock (needs uv). It must name no index host either.
checkov-lock:
	uv pip compile tools/checkov/requirements.in --generate-hashes \
	  --python-version 3.11 --no-header -o tools/checkov/requirements.lock
	! grep -nE '(https?://|--index-url|--extra-index-url|--find-links)' tools/checkov/requirements.lock

helm-check: $(STAMP)
	$(BIN)/python -m pytest -q tests/test_deploy_helm.py

tf-check: $(STAMP) $(CHECKOV_STAMP)
	$(BIN)/python -m pytest -q -rs tests/test_deploy_terraform.py tests/test_deploy_checkov.py

deploy-check: $(STAMP) $(CHECKOV_STAMP)
	$(BIN)/python -m pytest -q -rs tests/test_deploy_*.py
