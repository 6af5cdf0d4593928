# The two commands a new user needs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: run test lint models bench clean chromium

$(BIN)/.runtime: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements.txt
	touch $@

$(BIN)/.dev: $(BIN)/.runtime requirements-dev.txt
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@

## run: install into .venv, migrate the database, serve the bundled models on http://127.0.0.1:8000
run: $(BIN)/.runtime instance/jwt-secret
	@set -e; \
	export MODELGATE_JWT_SECRET_KEY="$${MODELGATE_JWT_SECRET_KEY:-$$(cat instance/jwt-secret)}"; \
	$(BIN)/flask --app app db upgrade; \
	$(BIN)/flask --app app users bootstrap; \
	exec $(BIN)/gunicorn -c gunicorn.conf.py "app:create_app()"

# A random signing key per installation, readable by its owner only; never a default in code.
instance/jwt-secret:
	mkdir -p instance
	umask 077 && $(PYTHON) -c "import secrets; print(secrets.token_urlsafe(48))" > $@

## test: lint, type-check and run the whole test suite (the web UI's tests drive Chromium)
test: $(BIN)/.dev chromium lint
	$(BIN)/python -m pytest -q

# Debian's chromium for the browser tests (tests/browser); apt's lists are refreshed only when
# the package cannot be found without it.
chromium:
	@command -v chromium >/dev/null || apt-get install -y -qq chromium >/dev/null 2>&1 || \
		(apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

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
