"""The suite's root conftest: registers the fixture modules of tests/support.

pytest reads ``pytest_plugins`` only from this top-level conftest. Loading it puts tests/ on
``sys.path`` (the default ``prepend`` import mode; tests/ has no ``__init__.py``), which is what
makes ``support.*`` importable, also when tox runs the suite from another directory. The fixtures
registered here need the ``stack`` fixture of tests/integration/conftest.py: a unit test that
asked for one would fail on the missing fixture instead of starting a stack.
"""

pytest_plugins = ["support.airflow_fixtures", "support.approval_fixtures"]
