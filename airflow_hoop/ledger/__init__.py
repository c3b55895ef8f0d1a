"""The tamper-evident ledger: records, canonical encoding, hash chain and verification.

Also the signed checkpoints, the anchor's copies of them, the export bundle (manifest, window
check, offline verify) and the reviewer's report. Pure Python: imports nothing of ours but
``airflow_hoop.errors`` (neither Airflow nor the gateway nor the client), so a reviewer can
verify a bundle with nothing else installed.
"""
