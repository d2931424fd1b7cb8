# Two commands: `make run` (the main job on the shipped cifar10-mini) and `make test`.
# Each creates the virtual environment it needs on a fresh machine (VENV=... to put it elsewhere).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.deps-$(shell sha256sum pyproject.toml | cut -c1-12)

$(STAMP):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

.PHONY: install run test
install: $(STAMP)
	$(BIN)/python -m pip install -q --no-deps -e .

run: install
	$(BIN)/certify run --poison miue --samples 1000

test: install
	$(BIN)/python -m pytest -q
