# airflow-hoop: `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PGBIN  ?= /usr/lib/postgresql/15/bin

UI_NODE := ui/node_modules/.installed

.PHONY: ui-build ui-check setup system-deps demo ui test test-fast lint format bench bench-quick dist clean docs compat

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,docs,agents]"
	touch $@

setup: $(VENV)/.installed system-deps

# PostgreSQL 15 server binaries (the embedded stack runs initdb/pg_ctl from them).
system-deps:
	@if [ ! -x "$(PGBIN)/initdb" ]; then \
		echo "Installing postgresql-15 (server binaries for the embedded stack)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 >/dev/null; \
	fi
	@# pgaudit: the embedded stack's optional audit log, joined to the ledger (docs/correlation.md).
	@if [ ! -e "$(PGBIN)/../lib/pgaudit.so" ]; then \
		echo "Installing postgresql-15-pgaudit (database-side correlation tests)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15-pgaudit >/dev/null; \
	fi
	@# Chromium drives the approvals UI test in a real browser (Playwright, executable_path).
	@if ! command -v chromium >/dev/null 2>&1; then \
		echo "Installing chromium (headless browser for the UI tests)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	fi
	@# Node.js and npm build the React plugin bundle (ui/ -> airflow_hoop/plugins/static/hoop-ui.js).
	@if ! command -v npm >/dev/null 2>&1; then \
		echo "Installing nodejs and npm (the UI bundle's build)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; \
	fi
	@# bubblewrap sandboxes every shell command of the gateway (docs/shell.md).
	@if [ ! -x /usr/bin/bwrap ]; then \
		echo "Installing bubblewrap (the shell steps' sandbox)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null; \
	fi
	@# HAProxy runs docs/deploy.md's load balancer rule in tests/integration/test_haproxy_step_rule.py.
	@if ! command -v haproxy >/dev/null 2>&1; then \
		echo "Installing haproxy (the documented step-affinity rule, tested)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null; \
	fi

demo: setup
	$(VENV)/bin/airflow-hoop demo $(if $(KEEP),--keep,)

# The stack and a real Airflow with the example DAGs triggered; prints the URL and logins.
# Ctrl-C stops everything it started. PORT=0 picks any free port (default 8080 when free).
ui: setup
	$(VENV)/bin/airflow-hoop ui $(if $(PORT),--port $(PORT),)

# The React plugin bundle is committed (the wheel builds without Node); `ui-check` (part of lint)
# fails when the committed bundle differs from a fresh build of ui/src, or ui/src fails tsc.
$(UI_NODE): ui/package.json ui/package-lock.json
	cd ui && npm ci --no-audit --no-fund --loglevel=error
	touch $@

ui-build: $(UI_NODE)
	cd ui && npm run --silent typecheck && npm run --silent build

ui-check: $(UI_NODE)
	cd ui && npm run --silent typecheck && npm run --silent check

lint: $(VENV)/.installed ui-check
	$(VENV)/bin/ruff check airflow_hoop tests example_dags bench
	$(VENV)/bin/ruff format --check airflow_hoop tests example_dags bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

format: $(VENV)/.installed
	$(VENV)/bin/ruff format airflow_hoop tests example_dags bench
	$(VENV)/bin/ruff check --fix airflow_hoop tests example_dags bench

# The whole suite: tests/unit and tests/integration (the embedded stack, real Airflow).
test: setup lint docs
	$(VENV)/bin/pytest -q

# tests/unit only: no embedded stack, no server processes; under a minute.
test-fast: $(VENV)/.installed
	$(VENV)/bin/pytest -q tests/unit

# The docs site (MkDocs, Material) into site/; --strict: a broken link or page fails the build.
# The API and configuration pages are generated from the code (docs/_hooks/generated_pages.py).
docs: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet --site-dir site

# The compatibility matrix (tox.ini): the built wheel in fresh virtualenvs with the oldest and
# the newest supported Airflow, `airflow providers list` and a smoke subset. CI runs it after
# `make test`; `make compat ENVS=airflow32` runs another.
ENVS ?= airflow31,airflow33
compat: setup
	PGBIN=$(PGBIN) $(VENV)/bin/tox -e $(ENVS)

# Every benchmark writes a BenchReport to $(RESULTS)/<name>.json; bench/report.py renders
# docs/performance.md from them. A benchmark that fails leaves no file (its old one is removed
# first, so the page never shows stale numbers as new): it appears as "not run", and make fails
# at the end, after the page is written. bench-quick checks the pipeline with small N (its page
# goes to bench/results/quick/performance.md, not docs/).
RESULTS ?= bench/results
PAGE    ?= docs/performance.md
# Four rounds: each DAG runs first twice (docs/load.md).
LOAD_ARGS ?= --rounds 4
define run_bench
	@rm -f $(RESULTS)/$(1).json
	@echo "== bench/$(1).py $(2)"
	@if [ -f bench/$(1).py ]; then \
		$(PY) bench/$(1).py $(2) --json $(RESULTS)/$(1).json || echo $(1) >> $(RESULTS)/failed.txt; \
	else echo "bench/$(1).py does not exist: not run"; fi
endef

bench: setup
	@mkdir -p $(RESULTS) && rm -f $(RESULTS)/failed.txt
	$(call run_bench,step_overhead,$(STEP_ARGS))
	$(call run_bench,shell_overhead,$(SHELL_ARGS))
	$(call run_bench,agent_tool_call,$(AGENT_ARGS))
	$(call run_bench,ledger,$(LEDGER_ARGS))
	$(call run_bench,export_month,$(EXPORT_ARGS))
	$(call run_bench,masking,$(MASKING_ARGS))
	$(call run_bench,approval_latency,$(APPROVAL_ARGS))
	$(call run_bench,notifications,$(NOTIFY_ARGS))
	$(call run_bench,ui,$(UI_ARGS))
	$(call run_bench,load,$(LOAD_ARGS))
	$(call run_bench,stream,$(STREAM_ARGS))
	$(PY) bench/report.py --results $(RESULTS) --out $(PAGE)
	@if [ -s $(RESULTS)/failed.txt ]; then echo "failed: $$(cat $(RESULTS)/failed.txt | xargs)"; exit 1; fi

bench-quick:
	$(MAKE) bench RESULTS=bench/results/quick PAGE=bench/results/quick/performance.md \
		STEP_ARGS="-n 5 --statements 20 --warmup 2" \
		SHELL_ARGS="-n 5 --big-n 2 --steps 3 --warmup 2" \
		AGENT_ARGS="-n 10 --warmup 2" \
		LEDGER_ARGS="--records 2000 --writers 1,4 -n 100 --http-steps 2 --http-statements 5" \
		EXPORT_ARGS="--records 20000 -n 1" \
		MASKING_ARGS="--rows 20000 --runs 2 --shell-mb 4" \
		APPROVAL_ARGS="-n 2 --sensors 10 --window 10" \
		NOTIFY_ARGS="-n 5" \
		UI_ARGS="--records 20000 --statements 50 -n 3" \
		LOAD_ARGS="--tasks 20 --parallelism 4" \
		STREAM_ARGS="--records 4000 --runs 2 --seconds 4"

# sdist + wheel into dist/ (isolated build: hatchling from the index)
dist: $(VENV)/.installed
	rm -rf dist
	$(PY) -m build --outdir dist .

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
