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

# Three pytest workers on this 2-core machine: most of a test's time is a JVM starting or a process waiting. Whole
# files go to the workers, the longest first (tests/conftest.py LONGEST_FIRST), so none starts last and runs alone.
# Bytecode is cached (this machine sets PYTHONDONTWRITEBYTECODE): each luigi process and Spark worker of the suite
# would otherwise compile the project again. `pytest -p no:xdist` runs the suite in one process.
test: $(STAMP) lint
	env -u PYTHONDONTWRITEBYTECODE PATH="$(abspath $(BIN)):$$PATH" \
		$(BIN)/python -m pytest -q -n 3 --dist loadfile --no-loadscope-reorder

test-slow: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q -m slow

bench: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m bench.run

# The real luigi command on whole archives (~44 minutes here; E2E_ARGS=--quick: ~16); writes bench/E2E.md.
bench-e2e: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m bench.e2e $(E2E_ARGS)

clean:
	rm -rf $(VENV) .demo .bench .bench-e2e .manifest-markers
