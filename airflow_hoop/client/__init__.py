"""The httpx clients of the gateway (ours or hoop.dev): ``http`` (``GatewayClient``, what
Airflow-side code uses), ``shell`` (one shell command, output followed), ``approver`` (the UI
plugin's decisions), ``audit`` and ``audit_views`` (the auditor's reads); ``errors`` maps HTTP
answers to typed errors and ``hoop_text`` reads rows from a hoop.dev gateway's psql text.

The request and response models are in ``airflow_hoop.wire``. Imports neither Airflow nor
``airflow_hoop.gateway``.
"""
