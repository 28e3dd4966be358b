# Entry points. Every target creates the virtualenv first when it is missing or out of date.
SHELL := /bin/bash
PYTHON ?= python3
# Another place for the virtualenv: make venv VENV=/tmp/venv-x (then make test VENV=/tmp/venv-x ...).
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# uv installs exactly what uv.lock pins: the four services' packages (editable) and the dev group. The uv that
# does it lives in the virtualenv itself (it is in the dev group), so a fresh clone needs only python3.
UV_ENV := UV_PROJECT_ENVIRONMENT=$(abspath $(VENV)) UV_PYTHON_DOWNLOADS=never UV_LINK_MODE=copy

.PHONY: venv lock test test-loop test-fast test-faults test-hosts lint dev dev-down bench simulate compose-check admin-token clean

venv: $(STAMP)

$(BIN)/uv:
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q uv

# --locked: a pyproject.toml changed without `make lock` fails here rather than install something else.
$(STAMP): uv.lock pyproject.toml $(wildcard services/*/pyproject.toml) docker/mlflow/pyproject.toml | $(BIN)/uv
	$(UV_ENV) $(BIN)/uv sync --locked --all-packages
	@touch $(STAMP)

## make lock: after changing a dependency in a pyproject.toml, resolve uv.lock again (make venv then installs it).
lock: | $(BIN)/uv
	$(UV_ENV) $(BIN)/uv lock

## make test: the whole suite against real MLflow, Postgres, Redis, Celery and Prometheus.
test: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## make test-loop: the unattended drift → alert → retrain on production data → recovery scenario (minutes;
## not in make test; LOOP_REPORT=path.json keeps its timeline).
test-loop: venv
	$(BIN)/python -m pytest tests/loop $(PYTEST_ARGS)

## make test-fast: everything except the slow end-to-end and fault tests.
test-fast: venv
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

## make test-faults: the fault, load and hostile-input tests alone (they also run in make test).
test-faults: venv
	$(BIN)/python -m pytest tests/faults $(PYTEST_ARGS)

## make test-hosts: the stack on seven hosts made of network namespaces (root; not part of make test: it takes minutes).
test-hosts: venv
	$(BIN)/python -m pytest tests/hosts $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check services clients tests bench scripts
	$(BIN)/mypy --cache-dir $(VENV)/.mypy_cache

## make dev: the whole stack as local processes (no Docker). make dev-down stops it.
dev: venv
	@bash scripts/dev.sh up

dev-down:
	@bash scripts/dev.sh down

## make bench: predictor vs mlflow models serve vs a no-op ASGI app (wrk; writes bench/results/latest.*)
bench: venv
	@command -v wrk >/dev/null || (apt-get update -q && apt-get install -y -q wrk)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

## make compose-check: validates the compose files; with a Docker engine (started if need be) builds, runs and
## checks the stack end to end (retrain → promoted → predict, restart, state survives), then tears it down.
compose-check:
	@bash scripts/compose-check.sh

## make admin-token: the admin's API token that secrets-init generated for the Docker stack (registry-proxy's
## `admin` principal, every role): from the running stack, or else from the secrets volume (stack down).
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
admin-token:
	@$(COMPOSE) exec -T registry-proxy cat /run/secrets/mlops/registry_admin_token 2>/dev/null && echo \
	  || $(COMPOSE) run --rm --no-deps -T secrets-init --print registry_admin_token 2>/dev/null

## make simulate: replay January to June of taxi fares through the real API (needs make dev running).
simulate: venv
	$(BIN)/python scripts/simulate.py $(SIMULATE_ARGS)

clean:
	rm -rf $(VENV) .dev .pytest_cache
