"""The gateway's own database: the insert-only ledger, session rows, reviews, recovery tables.

- ``schema``: tables, triggers and the gateway role's grants (``migrate``, run as superuser)
- ``recovery_schema``: the recovery tables, and the lease rows kept with credential records
- ``appender``: group commit of ledger appends under the ledger's advisory lock
- ``store``: the pool, appends, session rows; ``ledger_reads``, ``audit_reads``: the reads

The bottom of the gateway: it imports only ``ledger``, ``wire`` and ``errors``.
"""
