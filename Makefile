# Two commands for a fresh machine (see README.md):
#   make demo   - create .venv, install, run the quickstart search offline, then pareto and prune
#   make test   - create .venv with dev extras, run ruff (lint and format), mypy (package and bench) and pytest
PYTHON ?= python3
VENV ?= .venv
PIP := $(VENV)/bin/pip
PP := $(VENV)/bin/prunepilot
PYTEST_ARGS ?=
DEMO_RUN ?= runs/quickstart-$(shell date +%Y%m%d-%H%M%S)

.PHONY: install-dev demo test lint typecheck pytest wheel-check clean

# torch/torchvision come from pyproject's ranges; pip picks local wheels where the machine has them.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e ".[dev]"
	touch $@

install-dev: $(VENV)/.installed

demo: install-dev
	$(PP) search configs/quickstart.yaml --run-dir $(DEMO_RUN)
	$(PP) pareto $(DEMO_RUN) --export $(DEMO_RUN)/policy.json
	$(PP) prune --run $(DEMO_RUN) --policy $(DEMO_RUN)/policy.json --out $(DEMO_RUN)/pruned

lint: install-dev
	$(VENV)/bin/ruff check prunepilot tests bench
	$(VENV)/bin/ruff format --check prunepilot tests bench

typecheck: install-dev
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy bench

pytest: install-dev
	$(VENV)/bin/pytest $(PYTEST_ARGS)

test: install-dev
	$(VENV)/bin/ruff check prunepilot tests bench
	$(VENV)/bin/ruff format --check prunepilot tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy bench
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# build the wheel, install it into a fresh venv and run devices/init/search from an empty folder
wheel-check: install-dev
	bash .ci/wheel_check

clean:
	rm -rf $(VENV) build *.egg-info
