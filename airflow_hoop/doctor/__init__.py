"""``airflow-hoop doctor``: what each component needs, checked from where it runs.

``probes`` (reaching the gateway and Vault: TLS, readiness, clock), ``airflow_side`` (a
worker's ``hoop`` connection, the API server's ``[hoop]`` keys), ``gateway_side`` (the
gateway's settings, its database role, its Vault). Every check is a ``CheckResult`` with the
fix when it fails.
"""
