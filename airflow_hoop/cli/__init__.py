"""The ``airflow-hoop`` command line (console script ``airflow_hoop.cli.main:main``).

- ``main``: the commands: gateway, stack, demo, ui, and the ``audit`` group
- ``audit``: ``audit verify`` (live or ``--bundle``) and ``audit export``, their options
- ``export``: live verification and the bundle export, read from a gateway
- ``demo``: the governed ETL on the embedded stack, then the ledger read back
- ``tables``: the terminal tables and lines of the demo

May import anything of the package, the gateway included (``gateway serve``; the report needs
only ``ledger``: the recorded label, or ``ledger.sql_label`` for older records). Nothing else in
the package imports it (the UI's export runs it as a child process).
"""
