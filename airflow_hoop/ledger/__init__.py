"""The tamper-evident ledger: records, canonical encoding, hash chain and verification.

Also the signed checkpoints, the anchor's copies of them, the export bundle (manifest, window
check, offline verify), the reviewer's report and the SQL label (``sql_label``: PostgreSQL's
parser, through ``pglast``, no database). Pure: imports nothing of ours but
``airflow_hoop.errors`` (neither Airflow nor the gateway nor the client) and no network or
database client, so a reviewer can verify a bundle with nothing else installed.
"""
