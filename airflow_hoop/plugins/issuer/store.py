"""What the issuer reads from Airflow's metadata database, and its own record of what it did.

Read with SQLAlchemy Core on Airflow's tables (``task_instance``, ``rendered_task_instance_
fields``, ``dag_version``, ``dag_run``; the columns used are the same in 3.1 to 3.3), so the
standalone issuer does not import Airflow. Its own table ``hoop_issuer_events`` records every
token minted and every refusal; its unique ``commitment`` column makes each commitment
single-use, durably and across issuer replicas that share the database.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

_TI = sa.table(
    "task_instance",
    sa.column("id", sa.Uuid()),
    sa.column("dag_id", sa.String),
    sa.column("task_id", sa.String),
    sa.column("run_id", sa.String),
    sa.column("map_index", sa.Integer),
    sa.column("try_number", sa.Integer),
    sa.column("state", sa.String),
    sa.column("hostname", sa.String),
    sa.column("dag_version_id", sa.Uuid()),
)
_RTIF = sa.table(
    "rendered_task_instance_fields",
    sa.column("dag_id", sa.String),
    sa.column("task_id", sa.String),
    sa.column("run_id", sa.String),
    sa.column("map_index", sa.Integer),
    sa.column("rendered_fields", sa.JSON),
)
_VERSION = sa.table(
    "dag_version",
    sa.column("id", sa.Uuid()),
    sa.column("bundle_name", sa.String),
    sa.column("bundle_version", sa.String),
)
_RUN = sa.table(
    "dag_run",
    sa.column("dag_id", sa.String),
    sa.column("run_id", sa.String),
    sa.column("triggering_user_name", sa.String),
)

_META = sa.MetaData()
EVENTS = sa.Table(
    "hoop_issuer_events",
    _META,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),  # issued | refused
    sa.Column("reason", sa.String(500), nullable=False),
    sa.Column("dag_id", sa.String(250)),
    sa.Column("task_id", sa.String(250)),
    sa.Column("run_id", sa.String(250)),
    sa.Column("map_index", sa.Integer),
    sa.Column("ti_id", sa.String(36)),
    sa.Column("try_number", sa.Integer),
    sa.Column("audience", sa.String(200)),
    sa.Column("jti", sa.String(64)),
    # Set only when a token was issued: a second use of the commitment violates the key.
    sa.Column("commitment", sa.String(64), unique=True),
)


@dataclass(frozen=True)
class RunningStep:
    """One task instance as the metadata database has it."""

    ti_id: str
    dag_id: str
    task_id: str
    run_id: str
    map_index: int
    try_number: int
    state: str | None
    hostname: str | None
    bundle_name: str | None
    bundle_version: str | None
    triggered_by: str | None
    rendered_fields: dict[str, Any] | None


class SpentCommitmentError(Exception):
    """The commitment was used before (raised by ``record_issued``)."""


class IssuerStore:
    """The metadata database, seen by the issuer."""

    def __init__(self, url: str) -> None:
        connect_args: dict[str, Any] = {}
        if url.startswith("sqlite"):
            # `airflow dags test` writes to the same file: wait for its locks, briefly.
            connect_args = {"timeout": 10, "check_same_thread": False}
        self.engine = sa.create_engine(url, connect_args=connect_args, pool_pre_ping=True)
        self._events_ready = False
        self._has_trigger_user: bool | None = None

    def task_instance(
        self, dag_id: str, run_id: str, task_id: str, map_index: int
    ) -> RunningStep | None:
        """The task instance row with its rendered fields, bundle and triggering user, or None.

        One query (outer joins): the issuer's round trip is on every step's path.
        """
        with self.engine.connect() as conn:
            columns: list[Any] = [
                _TI,
                _RTIF.c.rendered_fields,
                _VERSION.c.bundle_name,
                _VERSION.c.bundle_version,
            ]
            joined = _TI.outerjoin(
                _RTIF,
                sa.and_(
                    _RTIF.c.dag_id == _TI.c.dag_id,
                    _RTIF.c.run_id == _TI.c.run_id,
                    _RTIF.c.task_id == _TI.c.task_id,
                    _RTIF.c.map_index == _TI.c.map_index,
                ),
            ).outerjoin(_VERSION, _VERSION.c.id == _TI.c.dag_version_id)
            if self._trigger_user_column(conn):
                columns.append(_RUN.c.triggering_user_name)
                joined = joined.outerjoin(
                    _RUN, sa.and_(_RUN.c.dag_id == _TI.c.dag_id, _RUN.c.run_id == _TI.c.run_id)
                )
            row = conn.execute(
                sa.select(*columns)
                .select_from(joined)
                .where(
                    _TI.c.dag_id == dag_id,
                    _TI.c.run_id == run_id,
                    _TI.c.task_id == task_id,
                    _TI.c.map_index == map_index,
                )
            ).first()
        if row is None:
            return None
        rendered = row.rendered_fields
        user = getattr(row, "triggering_user_name", None)
        return RunningStep(
            ti_id=str(uuid.UUID(str(row.id))),
            dag_id=row.dag_id,
            task_id=row.task_id,
            run_id=row.run_id,
            map_index=int(row.map_index),
            try_number=int(row.try_number or 0),
            state=row.state,
            hostname=row.hostname,
            bundle_name=row.bundle_name,
            bundle_version=row.bundle_version,
            triggered_by=str(user) if user else None,
            rendered_fields=rendered if isinstance(rendered, dict) else None,
        )

    def _trigger_user_column(self, conn: sa.Connection) -> bool:
        """Whether ``dag_run`` has ``triggering_user_name`` (asked once per process)."""
        if self._has_trigger_user is None:
            columns = {c["name"] for c in sa.inspect(conn).get_columns("dag_run")}
            self._has_trigger_user = "triggering_user_name" in columns
        return self._has_trigger_user

    def record_issued(self, commitment: str, **fields: Any) -> None:
        """Record the token; SpentCommitmentError when another request spent it first."""
        self._ensure_events()
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    EVENTS.insert().values(
                        at=time.time(), outcome="issued", commitment=commitment, **fields
                    )
                )
        except IntegrityError:
            raise SpentCommitmentError from None

    def record_refused(self, reason: str, **fields: Any) -> None:
        self._ensure_events()
        with self.engine.begin() as conn:
            conn.execute(
                EVENTS.insert().values(at=time.time(), outcome="refused", reason=reason, **fields)
            )

    def _ensure_events(self) -> None:
        if not self._events_ready:
            _META.create_all(self.engine, checkfirst=True)
            self._events_ready = True
