# Hookline: `make run [PORT=8000]` serves the example flows on http://127.0.0.1:$(PORT); `make test` runs every test.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
PORT ?= 8000

.PHONY: run test lint bench clean install

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(TEST_STAMP): pyproject.toml $(STAMP)
	$(BIN)/pip install -q -e '.[test]'
	@command -v chromium >/dev/null 2>&1 || { echo "installing Debian chromium for browser tests"; \
	  (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1 || echo "warning: could not install chromium"; }
	touch $@

install: $(STAMP)

run: $(STAMP)
	set -a; . ./flows/demo.env; set +a; $(BIN)/hookline serve --flows flows --host 127.0.0.1 --port $(PORT)

test: $(TEST_STAMP)
	$(BIN)/ruff check engine web tests $(wildcard bench)
	$(BIN)/mypy --strict engine web
	$(BIN)/python -m pytest -q

lint: $(TEST_STAMP)
	$(BIN)/ruff check engine web tests $(wildcard bench)
	$(BIN)/mypy --strict engine web

# make bench [BENCH_ARGS="--sections peers --with-n8n --peers-kill"]; the peers section needs node + npm and wrk
bench: $(TEST_STAMP)
	@command -v wrk >/dev/null 2>&1 || { echo "installing Debian wrk for the benchmarks"; \
	  apt-get install -y -qq wrk >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq wrk) >/dev/null 2>&1 \
	  || echo "warning: could not install wrk"; }
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) hookline.db* *.egg-info
