# The two commands a platform engineer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
SECONDS ?= 20

.PHONY: demo test install install-test lint bench clean

$(VENV)/bin/activate:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

install: $(VENV)/bin/activate
	$(PIP) install --quiet -e '.[demo]'

install-test: $(VENV)/bin/activate
	$(PIP) install --quiet -e '.[dev]'

demo: install
	$(VENV)/bin/cityrelay demo --seconds $(SECONDS)

test: install-test
	$(PY) -m pytest --json-report --json-report-file=pytest_results.json \
		--cov --cov-report=term --cov-report=json:coverage.json --cov-fail-under=90 $(PYTEST_ARGS)

lint: install-test
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/mypy city queues jobs workers

bench: install-test
	$(PY) bench/pipeline.py

clean:
	rm -rf $(VENV) *.egg-info pytest_results.json coverage.json .coverage
