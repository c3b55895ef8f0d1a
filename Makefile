# airflow-hoop: `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PGBIN  ?= /usr/lib/postgresql/15/bin

.PHONY: setup system-deps demo test lint format bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

setup: $(VENV)/.installed system-deps

# PostgreSQL 15 server binaries (the embedded stack runs initdb/pg_ctl from them).
system-deps:
	@if [ ! -x "$(PGBIN)/initdb" ]; then \
		echo "Installing postgresql-15 (server binaries for the embedded stack)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 >/dev/null; \
	fi

demo: setup
	$(VENV)/bin/airflow-hoop demo $(if $(KEEP),--keep,)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check airflow_hoop tests example_dags bench
	$(VENV)/bin/ruff format --check airflow_hoop tests example_dags bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

format: $(VENV)/.installed
	$(VENV)/bin/ruff format airflow_hoop tests example_dags bench
	$(VENV)/bin/ruff check --fix airflow_hoop tests example_dags bench

test: setup lint
	$(VENV)/bin/pytest -q

bench: setup
	$(PY) bench/step_overhead.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
