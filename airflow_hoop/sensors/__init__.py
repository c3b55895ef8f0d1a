"""Sensors: (arrive with approvals)."""
