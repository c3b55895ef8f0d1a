"""What travels between the Airflow side and the gateway: hoop's session and review API and
our extensions, as pydantic models, plus the two codecs of that wire (typed SQL values,
hoop's ``env_vars``).

- ``sessions``: exec request/response, session info, step end (``/api/sessions``)
- ``reviews``: reviews and decisions (``/api/reviews``)
- ``audit``: the audit-view reads; ``ledger``: the ledger reads (``/api/airflow-hoop/*``)
- ``values``, ``env``: the value and ``env_vars`` encodings both sides apply

Both ``client`` and ``gateway`` import it, so the gateway never needs the client. No HTTP, no
logic beyond validation: it imports nothing of ours but ``airflow_hoop.errors`` and the pure
record models of ``airflow_hoop.ledger`` that it carries.
"""
