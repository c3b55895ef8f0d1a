"""The gateway service: the enforcement point between Airflow and the targets.

A separate process (FastAPI + uvicorn, ``python -m airflow_hoop.gateway``). Its parts, each of
which may import those listed after it (and never one listed before):

- ``app``, ``__main__``, ``config_report``: the application, its process, ``check-config``
- ``routes/``: thin HTTP (sessions, reviews, ledger, audit, stream)
- ``pipeline``: the checks of one governed command, in order
- ``approvals/``: the approval gate of the exec path, the review state machine, their rows
- ``targets``: the connections as types (SQL or shell), each answering for its kind
- ``ledger_io/``: what runs beside the ledger (checkpoints, the recovery sweep)
- ``access/``: who the caller is (identity tokens, API keys) and what it may reach
- ``execution/``: one command's run (sessions, step contexts, runners)
- ``masking/``: what the output must not show (the policy models ``settings`` validates, and
  the engine the runners apply)
- ``db/``: the gateway database (schema, store, appender, reads)
- ``vault``, ``settings``: the gateway's Vault client; its configuration

``masking/`` sits beside ``settings``, not inside ``execution/``: the settings validate its
policy models, so inside ``execution/`` it would make ``settings`` and ``execution`` a cycle.
It never imports
Airflow, ``airflow_hoop.client``, ``task``, ``plugins`` or ``cli``; of the rest of the package
it imports ``wire``, ``ledger`` and ``errors``.
"""
