"""Triggers: (arrive with approvals)."""
