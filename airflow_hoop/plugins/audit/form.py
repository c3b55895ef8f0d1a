"""The Audit page's search form: query parameters in, a gateway ``AuditQuery`` out.

Times come from ``datetime-local`` inputs, which carry no zone: the page's script sends the
browser's offset (``tz``, minutes as JavaScript's ``getTimezoneOffset``), so "from 09:00" means
09:00 where the user is. Without it the times are UTC.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, Literal

from fastapi import Depends, Query
from pydantic import BaseModel, Field

from airflow_hoop.wire.audit import MAX_DAG_IDS, AuditQuery

Status = Literal["", "success", "failed", "killed", "interrupted", "open"]
_Text = Annotated[str | None, Query(max_length=250)]


class SearchForm(BaseModel):
    """What the user typed (empty fields are no filter)."""

    since: str | None = None
    until: str | None = None
    dag_id: str | None = None
    task_id: str | None = None
    connection: str | None = None
    user: str | None = None
    status: Status = ""
    tz: int = Field(0, ge=-18 * 60, le=18 * 60)
    before_seq: int | None = Field(None, ge=1)

    @property
    def filtered(self) -> bool:
        return any(
            (self.since, self.until, self.dag_id, self.task_id, self.connection, self.user)
        ) or bool(self.status)

    def when(self, text: str | None, name: str) -> datetime | None:
        """A form time as an aware UTC datetime."""
        if not text:
            return None
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{name}: {text!r} is not a date and time") from None
        if value.tzinfo is None:
            value = (value + timedelta(minutes=self.tz)).replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)

    def to_query(self, readable: set[str] | None, limit: int = 50) -> AuditQuery:
        """The gateway query; ``readable`` (None: every DAG) bounds the DAGs searched."""
        dag_ids = None
        if readable is not None:
            if len(readable) > MAX_DAG_IDS:
                raise ValueError(
                    f"you may read {len(readable)} DAGs, more than one search can list "
                    f"({MAX_DAG_IDS}); pick a DAG"
                )
            dag_ids = sorted(readable)
            if self.dag_id and self.dag_id not in readable:
                dag_ids = []  # a DAG the user may not read: nothing, not an error that leaks
        since, until = self.when(self.since, "From"), self.when(self.until, "Until")
        if since and until and until <= since:
            raise ValueError("Until must be after From")
        return AuditQuery(
            since=since,
            until=until,
            dag_ids=dag_ids,
            dag_id=self.dag_id or None,
            task_id=self.task_id or None,
            connection=self.connection or None,
            user=self.user or None,
            status=self.status or None,
            before_seq=self.before_seq,
            limit=limit,
        )

    def query_params(self, before_seq: int | None = None, *, paging: bool = True) -> dict[str, Any]:
        """The form as URL parameters (for the next page and the export link)."""
        fields = self.model_dump(exclude={"before_seq"}, exclude_defaults=True)
        params = {k: v for k, v in fields.items() if v not in (None, "")}
        if paging and before_seq is not None:
            params["before_seq"] = before_seq
        return params


def search_form(
    since: _Text = None,
    until: _Text = None,
    dag_id: _Text = None,
    task_id: _Text = None,
    connection: _Text = None,
    user: _Text = None,
    status: Status = "",
    tz: Annotated[int, Query(ge=-18 * 60, le=18 * 60)] = 0,
    before_seq: Annotated[int | None, Query(ge=1)] = None,
) -> SearchForm:
    return SearchForm(
        since=since,
        until=until,
        dag_id=dag_id,
        task_id=task_id,
        connection=connection,
        user=user,
        status=status,
        tz=tz,
        before_seq=before_seq,
    )


SearchFormDep = Annotated[SearchForm, Depends(search_form)]
