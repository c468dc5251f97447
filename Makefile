PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Two install sets: `make run` needs only what serving needs (no Spark, Playwright or schemathesis);
# `make test` adds the rest. Each has its own stamp, so `make run` after `make test` installs nothing.
# --no-compile: pip would byte-compile every installed module up front (most never run here);
# Python compiles the ones that are imported on first use instead.
SERVE_STAMP := $(VENV)/.installed-serve
TEST_STAMP := $(VENV)/.installed-test

.PHONY: run test bench lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(SERVE_STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q --no-compile -e '.[serve]'
	touch $(SERVE_STAMP)

$(TEST_STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e '.[all,dev]'
	touch $(TEST_STAMP) $(SERVE_STAMP)

DEMO := data/demo
DB := data/leukowatch.duckdb
HOST ?= 127.0.0.1
PORT ?= 8000

# The demo population (2,000 synthetic persons, seed 7, plus the named patients the docs show:
# demo-cloz, demo-cyclic, demo-2y) is generated and loaded once; delete data/ to start again.
# The store is built under a temporary name so a failed load leaves nothing. --subset 0: the store
# needs no per-person FHIR/HL7 files.
$(DB): | $(SERVE_STAMP)
	$(BIN)/leukowatch demo generate --persons 2000 --seed 7 --subset 0 -o $(DEMO)
	rm -f $(DB).tmp $(DB).tmp.wal
	$(BIN)/leukowatch demo load $(DEMO) --db $(DB).tmp
	mv $(DB).tmp $(DB)

run: $(SERVE_STAMP) $(DB)
	$(BIN)/leukowatch serve --db $(DB) --host $(HOST) --port $(PORT)

test: $(TEST_STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/pytest -n 2

bench: $(TEST_STAMP)
	$(BIN)/python bench/assess.py
	$(BIN)/python bench/serve.py
	$(BIN)/python bench/screen.py --rows 3000000

lint: $(TEST_STAMP)
	$(BIN)/ruff check src tests bench

clean:
	rm -rf $(VENV) build *.egg-info
