"""The embedded stack: throwaway PostgreSQL, OpenBao dev server and the gateway, configured.

One implementation used by ``airflow-hoop stack up|down``, ``make demo`` and the tests.
"""
