"""The Audit views of the Airflow UI: task-instance, DAG-run and DAG tabs, the search page,
the verification badge and the "Export for review" download.

- ``routes``: the pages; ``download``: the export as ``.tar.gz``
- ``pages``: what every page does (render, auditor client, read permission, gateway errors)
- ``form``: the search form; ``model``: the tabs' views built from ledger records
- ``verify``: the badge, checked with the ledger's own verifier

Imports ``plugins.common``, ``client``, ``wire`` and ``ledger``; never ``plugins.app``.
"""
