# The two commands a new user needs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: run test lint models bench clean

$(BIN)/.runtime: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements.txt
	touch $@

$(BIN)/.dev: $(BIN)/.runtime requirements-dev.txt
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@

## run: install into .venv and serve the bundled models on http://127.0.0.1:8000
run: $(BIN)/.runtime
	$(BIN)/gunicorn -c gunicorn.conf.py "app:create_app()"

## test: lint, type-check and run the whole test suite
test: $(BIN)/.dev lint
	$(BIN)/python -m pytest -q

lint: $(BIN)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## models: retrain the bundled models from packaged or generated data
models: $(BIN)/.dev
	$(BIN)/python -m training

## bench: throughput and latency tables (starts its own server)
bench: $(BIN)/.dev
	$(BIN)/python bench/throughput.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
