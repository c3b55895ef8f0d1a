"""What the tests share and are not tests: step clients and ledger reads on a running gateway
(gateway_support), the fault tests' own stacks and gateway processes (faults_support), the Airflow
homes and services of the Airflow tests (airflow_fixtures, approval_fixtures, registered as
plugins by tests/conftest.py), in-memory ledgers (ledger_factory), the hoop stand-in and its
recordings (hoop_contract/), the DAGs those Airflow homes run (dags/, dags_approvals/) and the
Audit tests' auth manager (loaded by Airflow as ``support.audit_auth_manager``).

Imported as ``support.*``: tests/conftest.py puts tests/ on ``sys.path`` (pytest's default
``prepend`` import mode), and nothing here is installed. May import ``airflow_hoop`` and other
``support`` modules, never a test module.
"""
