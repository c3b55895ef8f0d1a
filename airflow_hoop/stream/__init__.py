"""The ledger stream to a SIEM (docs/signals.md): what both its runners share.

``airflow-hoop audit stream`` (``cli/stream.py``, on a reviewer's or SIEM host with only an
auditor API key) and the gateway-side option (``gateway/ledger_io/siem.py``) both follow the
ledger with :class:`~airflow_hoop.stream.pump.StreamPump`: chain check, OCSF or raw JSONL,
a sink, then the durable cursor. Nothing here imports the gateway or an Airflow module.
"""
