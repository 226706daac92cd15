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

# The venv is installed pure, then .compiled builds the request path in place with the venv's
# own mypyc and dependencies (setup.py: a minute or so; GATEKEEPER_COMPILE=0 skips it); a change
# to a compiled module rebuilds it, so make demo and make test never run a stale build.
COMPILED_SOURCES := $(shell sed -n 's/^ *"\(gatekeeper\/[^"]*\.py\)",.*/\1/p' gatekeeper/compiled.py)

$(BIN)/.installed: pyproject.toml setup.py
	$(LOCK) sh -c '[ $@ -nt pyproject.toml ] && [ $@ -nt setup.py ] || { \
	    $(PYTHON) -m venv $(VENV) && \
	    $(BIN)/python -m pip install --quiet --upgrade pip "setuptools>=69" && \
	    GATEKEEPER_COMPILE=0 $(BIN)/python -m pip install --quiet --no-build-isolation \
	        -e ".[dev]" && \
	    touch $@; }'

.compiled: $(BIN)/.installed gatekeeper/compiled.py $(COMPILED_SOURCES)
	$(LOCK) sh -c 'find gatekeeper -name "*.so" -delete; \
	    [ "$${GATEKEEPER_COMPILE:-1}" = 0 ] || { \
	    $(BIN)/python setup.py --quiet build_ext --inplace >/dev/null && \
	    find gatekeeper -name "*.so" -exec touch {} +; }'
	touch $@

demo: .compiled
	$(BIN)/gatekeeper demo $(DEMO_ARGS)

test: .compiled
	$(BIN)/python -m pytest

lint: $(BIN)/.installed
	$(BIN)/ruff check gatekeeper tests benchmarks examples setup.py
	$(BIN)/mypy

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/hot_path.py
	$(BIN)/python benchmarks/http_load.py

clean:
	rm -rf $(VENV) $(VENV).lock .gatekeeper-demo .compiled build
	find gatekeeper -name '*.so' -delete
