PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e '.[all,dev]'
	touch $(STAMP)

DEMO := data/demo
DB := data/leukowatch.duckdb
HOST ?= 127.0.0.1
PORT ?= 8000

# The demo population (2,000 synthetic persons, seed 7) is generated and loaded once; delete
# data/ to start again. The store is built under a temporary name so a failed load leaves nothing.
$(DB): | $(STAMP)
	$(BIN)/leukowatch demo generate --persons 2000 --seed 7 -o $(DEMO)
	rm -f $(DB).tmp $(DB).tmp.wal
	$(BIN)/leukowatch demo load $(DEMO) --db $(DB).tmp
	mv $(DB).tmp $(DB)

run: $(STAMP) $(DB)
	$(BIN)/leukowatch serve --db $(DB) --host $(HOST) --port $(PORT)

test: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python bench/assess.py
	$(BIN)/python bench/serve.py
	$(BIN)/python bench/screen.py --rows 3000000

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

clean:
	rm -rf $(VENV) build *.egg-info
