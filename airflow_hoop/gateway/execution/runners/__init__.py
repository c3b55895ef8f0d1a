"""Runners: execute a governed command on its target (``postgres`` via psycopg)."""
