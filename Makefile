# layercache: every target sets up what it needs (virtualenv, pinned dependencies).
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
BIN := $(VENV)/bin
# The Lambda runtime's Python; `sam build` needs it on PATH. Tests run on 3.11+ too.
RUNTIME_PYTHON := $(shell scripts/find-python 3.13 2>/dev/null)
PYTHON ?= $(or $(RUNTIME_PYTHON),$(shell scripts/find-python 3.12 2>/dev/null),$(shell scripts/find-python 3.11 2>/dev/null),python3)
export AWS_EC2_METADATA_DISABLED := true
export SAM_CLI_TELEMETRY := 0

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

# Two editable distributions: `layercache` (functions/ and the user's command, cli/) and
# `layercache-dev` (tools/: demo, bench, the test kit); their dependencies are the pins.
$(BIN)/.installed: requirements-dev.txt functions/requirements.txt pyproject.toml tools/pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt -r functions/requirements.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e . -e tools
	@touch $@

.PHONY: venv
venv: $(BIN)/.installed ## Create the virtualenv with the pinned dependencies

.PHONY: lock
lock: ## Re-pin dependencies from requirements*.in (needs uv)
	uv pip compile --python-version 3.11 --python-platform x86_64-manylinux_2_28 --no-header --annotation-style line requirements.in -o functions/requirements.txt
	uv pip compile --python-version 3.11 --python-platform x86_64-manylinux_2_28 --no-header --annotation-style line requirements-dev.in -o requirements-dev.txt

.PHONY: buildspec
buildspec: $(BIN)/.installed ## Copy buildspecs/buildspec.yml into template.yaml
	$(BIN)/python scripts/sync_buildspec.py --write

.PHONY: lint
lint: $(BIN)/.installed ## ruff, mypy, cfn-lint, sam validate --lint, buildspec and slug in sync
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python scripts/sync_buildspec.py --check
	$(BIN)/python scripts/sync_slug.py --check
	$(BIN)/cfn-lint template.yaml --include-checks I
	$(BIN)/sam validate --lint --template-file template.yaml --region us-east-1

.PHONY: build
build: $(BIN)/.installed ## sam build with the runtime's own Python
	@test -n "$(RUNTIME_PYTHON)" || { echo "sam build needs python3.13 (the Lambda runtime) on PATH or in pyenv"; exit 1; }
	PATH="$(dir $(RUNTIME_PYTHON)):$$PATH" $(BIN)/sam build --template-file template.yaml

.PHONY: unit
unit: $(BIN)/.installed ## Unit tests only (no network)
	$(BIN)/pytest tests/unit

.PHONY: test
test: lint build ## Lint, types, template checks, sam build, then every test but the timing ones
	@status=0; $(BIN)/pytest || status=$$?; \
	  if [ -n "$$PYTEST_STATUS_FILE" ]; then echo $$status > "$$PYTEST_STATUS_FILE"; fi; \
	  exit $$status

.PHONY: local-invoke
local-invoke: $(BIN)/.installed ## Every sample in events/ through sam local invoke (image: .ci/lambda-base-image)
	LAYERCACHE_LOCAL_INVOKE=all $(BIN)/pytest tests/docker/test_local_invoke.py

.PHONY: demo
demo: $(BIN)/.installed ## The whole pipeline end to end on an embedded AWS and a local registry
	$(BIN)/layercache-dev demo

.PHONY: timing
timing: $(BIN)/.installed ## The tests that assert on wall-clock time (pytest -m timing)
	$(BIN)/pytest -m timing

.PHONY: bench
bench: timing ## The timing tests, then build strategies side by side and the pipeline's overhead
	$(BIN)/layercache-dev bench

.PHONY: clean
clean: ## Remove build output and caches
	rm -rf .aws-sam .mypy_cache .pytest_cache .ruff_cache
