# Two entry points for a fresh machine: `make demo` and `make test`. Both create .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test venv benchmarks clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# CPU PyTorch first (a local wheel here), so the package's torch requirement is already met.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --disable-pip-version-check -q torch==2.13.0
	$(BIN)/pip install --disable-pip-version-check -q -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/hitlseg demo

test: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q

benchmarks: $(STAMP)
	$(BIN)/python benchmarks/flim.py
	$(BIN)/python benchmarks/selection.py
	$(BIN)/python benchmarks/nets.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
