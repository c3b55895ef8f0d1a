"""hoop's ``GET /api/userinfo``: who the gateway takes the caller to be.

hoop answers with the user's email, groups and role; ours names the caller the same way (an
API key by its configured name, a step by its key), with our ``role`` and, for a UI key,
whether it may name the person who decided. Nothing secret: no key, no token.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class UserInfo(BaseModel):
    """The caller as the gateway sees it (``airflow-hoop doctor`` checks keys with it)."""

    email: str
    name: str
    groups: list[str]
    role: Literal["auditor", "admin", "approver", "step"]
    is_admin: bool
    type: Literal["api-key", "step"]
    asserts_users: bool = False
