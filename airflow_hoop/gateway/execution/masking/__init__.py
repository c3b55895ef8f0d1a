"""Output masking at the gateway: rules, content detectors and the engine that applies them.

See docs/masking.md. Nothing here imports Airflow; the ledger record of what was masked is
``airflow_hoop.ledger.records.MaskingRecord``.
"""
