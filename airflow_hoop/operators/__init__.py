"""Operators: SQL (and, later, shell) steps that run through the gateway."""
