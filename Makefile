# Switchboard: `make run` starts everything on the embedded defaults; `make test` runs the suite.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint install clean-data

$(STAMP): requirements.txt requirements-dev.txt
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is needed ($(PYTHON) not found)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps text-generation==0.7.0
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) -m controlplane.stack run

test: $(STAMP)
	$(PY) -m controlplane.stack exec -- $(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m controlplane.stack exec -- sh -c '$(VENV)/bin/mypy . && $(PY) manage.py check && $(PY) manage.py makemigrations --check --dry-run'

clean-data:
	rm -rf .data
