# Two entry points, both safe on a fresh machine with Python 3.11+:
#   make demo   builds the demo digest from the feeds bundled in examples/
#   make test   type-checks pipeline/ (mypy --strict) and runs the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/pipeline run --config examples/demo.yaml --date 2025-05-06
	@echo "Open output/2025-05-06/index.html in a browser, or run: $(BIN)/pipeline serve --config examples/demo.yaml"

test: $(STAMP)
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check pipeline tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) data output/*-*-* output/index.html
