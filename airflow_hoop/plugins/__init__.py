"""The Airflow plugin shipped with airflow-hoop (registered through the ``airflow.plugins``
entry point): the step listener and the API server's UI.

- ``listener``: the plugin class and the task listener that ends governed steps; imported in
  every task process, so it stays light (the app and its views are imported on first use)
- ``app``: the FastAPI app (built lazily) and the UI views Airflow links to
- ``common``: URL prefixes, ``map_index`` parsing, the shared Jinja2 environment and filters
- ``approvals``: the Approvals tab and page; ``audit/``: the Audit tabs, page and export
- ``templates/``: the pages' Jinja2 templates and ``audit.js``

The views may import ``common``, ``client``, ``wire``, ``ledger`` and Airflow's API server;
never ``app`` or ``listener``, and never ``airflow_hoop.gateway``.
"""
