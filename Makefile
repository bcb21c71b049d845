# The two set-up commands (see README): `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test setup lint bench

setup:
	@bash scripts/setup.sh $(VENV)

demo: setup
	$(VENV)/bin/regops demo

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy regops
	$(PY) -m pytest -q

bench: setup
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) bench/usage.py
