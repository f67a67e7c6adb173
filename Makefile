# Two commands do everything on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-slow lint bench bench-e2e clean

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@$(BIN)/python -m pipeline.runners.doctor
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m bench.demo

lint: $(STAMP)
	$(BIN)/ruff check pipeline spark bench tests

# Two pytest workers (one per core here), a test file per worker: most of a test's time is a JVM starting or a
# process waiting, so two at a time nearly halve the suite. `pytest -p no:xdist` runs it in one process.
test: $(STAMP) lint
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q -n 2 --dist loadfile

test-slow: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q -m slow

bench: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m bench.run

# The real luigi command on whole archives (~44 minutes here; E2E_ARGS=--quick: ~16); writes bench/E2E.md.
bench-e2e: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m bench.e2e $(E2E_ARGS)

clean:
	rm -rf $(VENV) .demo .bench .bench-e2e .manifest-markers
