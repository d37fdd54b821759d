# Two commands for a fresh machine (see README.md):
#   make demo   - create .venv, install, run the quickstart search offline
#   make test   - create .venv with dev extras, run ruff, mypy and pytest
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# torch/torchvision are resolved by pip from pyproject's ranges; on machines with a local
# wheel cache (see DEVELOPERS.md) pip picks those files.
PYTEST_ARGS ?=

.PHONY: venv install install-dev demo test lint typecheck pytest clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e ".[dev]"
	touch $@

install-dev: $(VENV)/.installed

demo: install-dev
	$(VENV)/bin/prunepilot search configs/quickstart.yaml

lint: install-dev
	$(VENV)/bin/ruff check prunepilot tests bench
typecheck: install-dev
	$(VENV)/bin/mypy

pytest: install-dev
	$(VENV)/bin/pytest $(PYTEST_ARGS)

test: install-dev
	$(VENV)/bin/ruff check prunepilot tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
