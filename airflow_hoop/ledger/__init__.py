"""The tamper-evident ledger: records, canonical encoding, hash chain and verification.

Pure Python: imports neither Airflow nor the gateway nor the client, so a reviewer can
verify a bundle with nothing else installed.
"""
