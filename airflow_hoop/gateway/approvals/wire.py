"""Reviews on the wire: hoop's Review JSON of a row, and a review request's statements as rows.

What a review shows of its statements is what the ledger records of them (``recorded``): the
script and digests, never the parameters the step will send.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow_hoop.errors import BadRequestError
from airflow_hoop.gateway.approvals.store import ReviewRow, StoredStatement, utc_now
from airflow_hoop.ledger.commands import parameters_sha256, statement_sha256
from airflow_hoop.wire.reviews import Review, ReviewCreate, ReviewExtension


def recorded(statements: list[StoredStatement]) -> list[dict[str, Any]]:
    """The statements as the ledger records and a review shows them."""
    return [
        s.model_dump(include={"script", "parameters_sha256", "sha256", "needs_approval"})
        for s in statements
    ]


def stored_statements(body: ReviewCreate, max_script_bytes: int) -> list[StoredStatement]:
    """A review request's statements as rows: checked (NUL, size) and digested."""
    out = []
    for index, statement in enumerate(body.statements):
        script = statement.script
        if "\x00" in script:
            raise BadRequestError(f"statement {index + 1} contains a NUL character")
        if len(script.encode("utf-8", "surrogatepass")) > max_script_bytes:
            raise BadRequestError(
                f"statement {index + 1} is longer than max_script_bytes ({max_script_bytes})"
            )
        params_digest = parameters_sha256(statement.parameters)
        out.append(
            StoredStatement(
                script=script,
                parameters=statement.parameters,
                parameters_sha256=params_digest,
                sha256=statement_sha256(script, params_digest),
            )
        )
    return out


def to_review(row: ReviewRow, now: datetime | None = None) -> Review:
    """hoop's Review JSON of a row, with our extension."""
    now = now or utc_now()
    return Review(
        id=str(row.id),
        session=str(row.session_id),
        status=row.status,
        created_at=row.created_at,
        review_groups_data=row.review_groups,
        access_request_rule_name=row.rule,
        min_approvals=row.min_approvals,
        force_approval_groups=row.force_approval_groups,
        rejection_reason=row.rejection_reason,
        revoke_at=row.expires_at,
        airflow_hoop=ReviewExtension(
            connection=row.connection,
            target=row.target,
            requester=row.requester,
            triggered_by=row.triggered_by,
            justification=row.justification,
            command_sha256=row.command_sha256,
            statements=recorded(row.statements),
            parameters=[s.parameters for s in row.statements],
            context=row.context,
            expires_after_seconds=row.expires_after_seconds,
            expires_at=row.expires_at,
            expired=row.status == "APPROVED" and row.expired(now),
            used_count=row.used_count,
            executed_try=row.executed_try,
            decisions=row.decisions,
        ),
    )
