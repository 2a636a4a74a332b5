# The two commands a newcomer needs: `make serve` (export the default models, then serve
# them) and `make test`. Everything else is a step of those or a tool for developers.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
REPO ?= model_repository

.PHONY: setup test lint format zoo-table export serve clean

# torch==2.13.0 first: the CPU build (a bare `torch` would pull a multi-GB CUDA build).
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[serve,export,loadtest,test]'
	touch $@

setup: $(VENV)/.installed

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

export: setup
	$(PY) export/to_onnx.py --output $(REPO) --if-missing

serve: export
	$(PY) -m service --model-repository $(REPO)

zoo-table: setup
	$(PY) -m models.zoo_table

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
