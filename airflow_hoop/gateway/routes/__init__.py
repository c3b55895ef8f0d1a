"""Thin HTTP: hoop's session and review API subset, and our extensions under
``/api/airflow-hoop``. Routes read the request, call a service, write the answer.

- ``deps``: the services the lifespan builds, the caller, the session a caller may see
- ``sessions``: exec (``pipeline.py`` runs its checks), session reads, kill, step end
- ``reviews``: hoop's review routes and ours; ``ledger``, ``audit``: read-only auditor routes
- ``stream``: a session's output as it runs; ``input_guard``: NUL in a URL refused

It may import every other part of the gateway, never ``app``.
"""
