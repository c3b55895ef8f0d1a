"""Hooks: the ``hoop`` connection and the Postgres-through-the-gateway DbApiHook."""
