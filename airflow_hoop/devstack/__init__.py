"""The embedded stack: throwaway PostgreSQL, OpenBao dev server and the gateway, configured,
and a throwaway Airflow home and services beside it.

One implementation used by ``airflow-hoop stack up|down``, ``make demo``, ``make ui``, the
tests and the benchmarks. It may import everything else of the package (it starts the gateway
and the Airflow plugin); nothing but ``cli`` and tests imports it.
"""
