# airflow-hoop: `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PGBIN  ?= /usr/lib/postgresql/15/bin

.PHONY: setup system-deps demo test lint format bench dist clean

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
	@# Chromium drives the approvals UI test in a real browser (Playwright, executable_path).
	@if ! command -v chromium >/dev/null 2>&1; then \
		echo "Installing chromium (headless browser for the UI tests)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
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
	$(PY) bench/approval_latency.py --json bench/results/approval_latency.json
	$(PY) bench/ledger.py --json bench/results/ledger.json
	$(PY) bench/export_month.py --json bench/results/export_month.json

# sdist + wheel into dist/ (isolated build: hatchling from the index)
dist: $(VENV)/.installed
	rm -rf dist
	$(PY) -m build --outdir dist .

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
