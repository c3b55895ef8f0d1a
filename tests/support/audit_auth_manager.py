"""A test auth manager: Airflow's simple auth manager, except that the user ``vic`` may read
only the DAG ``test_approval_timeout``.

Airflow's simple auth manager grants every role read access to every DAG (per-DAG limits need
multi-team mode or another auth manager), so "a user without permission on this DAG" cannot be
produced with it. This subclass is the one stand-in of the Audit tests; everything else
(tokens, the security dependencies, the plugin) is Airflow's own.
"""

from __future__ import annotations

from typing import Any

from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

RESTRICTED_USER = "vic"
ALLOWED_DAG = "test_approval_timeout"


class OneDagAuthManager(SimpleAuthManager):
    def is_authorized_dag(
        self, *, method: Any, user: Any, access_entity: Any = None, details: Any = None
    ) -> bool:
        if user.get_name() == RESTRICTED_USER and (details is None or details.id != ALLOWED_DAG):
            return False
        return super().is_authorized_dag(
            method=method, user=user, access_entity=access_entity, details=details
        )
