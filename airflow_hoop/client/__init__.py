"""Gateway client: httpx + pydantic models of hoop's session API. Never imports Airflow."""

from airflow_hoop.wire.sessions import ExecRequest, ExecResponse, SessionInfo

__all__ = ["ExecRequest", "ExecResponse", "SessionInfo"]
