# pegabridge: `make run` serves on the embedded default, `make test` runs every test.
PYTHON ?= python3
UV := .tools/bin/uv
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: setup run test lint typecheck unit bench schema clean

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check uv

$(BIN)/pegabridge: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --quiet
	@touch $@

setup: $(BIN)/pegabridge

run: setup
	$(BIN)/pegabridge migrate
	$(BIN)/pegabridge serve --host $(HOST) --port $(PORT)

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: setup
	$(BIN)/mypy

test: setup lint typecheck
	$(BIN)/pytest -q -p no:cacheprovider

unit: setup
	$(BIN)/pytest -q tests/unit

bench: setup
	$(BIN)/python -m bench

schema: setup
	$(BIN)/pegabridge schema --out docs/schema

clean:
	rm -rf .venv .tools var .pytest_cache .mypy_cache .ruff_cache
