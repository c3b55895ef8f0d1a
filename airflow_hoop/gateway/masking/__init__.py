"""Output masking at the gateway: rules, content detectors and the engine that applies them.

See docs/masking.md. It may import ``ledger`` and ``errors`` only (``settings`` imports its
policy models). Nothing here imports Airflow; the ledger record of what was masked is
``airflow_hoop.ledger.records.MaskingRecord``.
"""
