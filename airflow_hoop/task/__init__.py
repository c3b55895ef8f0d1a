"""What a running step uses on the Airflow side.

- ``identity``: who the step is, from the task context
- ``vault_config``: the ``hoop`` connection's Vault settings, Vault errors made typed
- ``vault``: the step's Vault login and identity token, revoked at the end
- ``workload_signer``: the Kubernetes executor's login, Vault transit signing the step's JWT
- ``step_session``: the governed step (its login, its gateway client, its end)

It may import ``client``, ``wire``, ``ledger``, ``defaults`` and ``errors``; never the hooks,
operators, sensors or triggers built on it, and never ``airflow_hoop.gateway``. (The approval
request flow needs the hooks and the trigger, so it lives with the operators:
``operators/approval_request.py``.)
"""
