# Two commands on a fresh machine (Python >= 3.11): `make demo` and `make test`, also at once.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_ARGS ?=
# e.g. make demo DEMO_ARGS='--port 8001'
# flock (util-linux) makes concurrent makes build the venv once: the second waits, then finds
# it built. Where flock is missing (macOS), run the first make alone.
LOCK := $(if $(shell command -v flock 2>/dev/null),flock $(VENV).lock)

.PHONY: demo test lint bench clean

$(BIN)/.installed: pyproject.toml
	$(LOCK) sh -c '[ $@ -nt pyproject.toml ] || { \
	    $(PYTHON) -m venv $(VENV) && \
	    $(BIN)/python -m pip install --quiet --upgrade pip && \
	    $(BIN)/python -m pip install --quiet -e ".[dev]" && \
	    touch $@; }'

demo: $(BIN)/.installed
	$(BIN)/gatekeeper demo $(DEMO_ARGS)

test: $(BIN)/.installed
	$(BIN)/python -m pytest

lint: $(BIN)/.installed
	$(BIN)/ruff check gatekeeper tests benchmarks examples
	$(BIN)/mypy

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/hot_path.py
	$(BIN)/python benchmarks/http_load.py

clean:
	rm -rf $(VENV) $(VENV).lock .gatekeeper-demo
