# Two commands: `make demo` runs the demo, `make test` runs every check and the whole test suite.
# Both create the virtual environment in .venv and install what they need into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEV := $(VENV)/.installed-dev
DEMO := $(VENV)/.installed-demo

.PHONY: demo test install check lint format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(DEMO): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt -e '.[demo]'
	touch $@

$(DEV): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@ $(DEMO)

demo: $(DEMO)
	$(BIN)/tracekit demo

install: $(DEV)

# Three processes on the two cores CI's machines have: most tests wait on the servers they start
# (brokers, collectors, Prometheus, workers), so a third process finds a core free most of the
# time: the whole suite took 12 min 27 s where two processes took 17 min 38 s, one tree on one
# machine. worksteal: a process that runs out of tests takes some of another's, so a file of long
# tests does not leave one working alone at the end.
# The 30 longest tests are listed at the end: the suite is kept well under 15 minutes.
test: $(DEV) check
	$(BIN)/python -m pytest -n 3 --dist worksteal --durations=30

check: $(DEV)
	$(BIN)/ruff check src cli tests bench tools
	$(BIN)/ruff format --check src cli tests bench tools
	$(BIN)/mypy

format: $(DEV)
	$(BIN)/ruff format src cli tests bench tools
	$(BIN)/ruff check --fix src cli tests bench tools

bench: $(DEV)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache
