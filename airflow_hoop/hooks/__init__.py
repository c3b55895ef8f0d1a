"""Hooks (public API, paths stable): ``HoopHook`` (the ``hoop`` connection), and
``HoopPostgresHook``, a ``DbApiHook`` whose DB-API connection (``dbapi``) runs every statement
through the gateway as the step.

May import ``task`` (the step's identity and session), ``client``, ``wire``, ``defaults`` and
``errors``. Never ``gateway``.
"""
