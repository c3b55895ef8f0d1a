"""The Approvals tab's decision of an agent's write, passed on to the paused agent task.

An agent step whose tool call needs approval is parked by common-ai in Airflow's tool approval
(AWAITING_INPUT, Airflow 3.3+) after asking the gateway for a review of the exact statement
(``agents/toolset.py``). The approver decides once, in the Approvals tab: the plugin sends the
decision with approver and reason to the gateway (which alone lets the write run), and then,
here, records the same answer in Airflow's own request so that the task resumes. The task never
tells the gateway anything about the decision. It goes through Airflow's own handler of the
Required Actions answer (``update_hitl_detail``), as the approver: assigned users, a request
already answered (409) and the resume are Airflow's rules.

An answer given in Required Actions alone reaches only the task: the resumed write is then
refused by the gateway (no approved review) and the agent is told so.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import HTTPException

from airflow_hoop.defaults import AGENT_TOOL_CALL
from airflow_hoop.wire.reviews import Review

log = logging.getLogger(__name__)


def is_agent_pause(review: Review) -> bool:
    """Was the review asked for by an agent's tool call that Airflow's tool approval parks?"""
    ext = review.airflow_hoop
    return ext is not None and AGENT_TOOL_CALL in ext.context


def answer_agent_pause(review: Review, user: Any, reason: str | None) -> bool:
    """Answer the paused task's tool approval with the gateway's decision; True if answered.

    Only a settled review (APPROVED or REJECTED) answers; a review that needs more approvals
    leaves the task waiting. Nothing is answered unless the target task instance (same try)
    is parked for input with an open request.
    """
    from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_3_PLUS

    ext = review.airflow_hoop
    if not AIRFLOW_V_3_3_PLUS or ext is None or review.status not in ("APPROVED", "REJECTED"):
        return False
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState
    from sqlalchemy import select

    t = ext.target
    with create_session() as session:
        ti = session.scalar(
            select(TaskInstance).where(
                TaskInstance.dag_id == t.dag_id,
                TaskInstance.run_id == t.run_id,
                TaskInstance.task_id == t.task_id,
                TaskInstance.map_index == t.map_index,
            )
        )
        detail = (
            None
            if ti is None
            else session.scalar(select(HITLDetail).where(HITLDetail.ti_id == ti.id))
        )
        if (
            ti is None
            or ti.state != TaskInstanceState.AWAITING_INPUT
            or (t.try_number is not None and ti.try_number != t.try_number)
            or detail is None
            or detail.response_received
        ):
            return False
        params: dict[str, Any] = {"reason": reason or ""}
        request = (detail.params or {}).get("request")
        if isinstance(request, dict) and "value" in request:
            params["request"] = request["value"]  # which pause of the run it answers
        approved = review.status == "APPROVED"
        try:
            _answer(t, approved, params, user, session)
        except HTTPException as exc:
            # The gateway's decision stands; only Airflow's pause was not answered (the user
            # is not one of its assigned users, or it was answered meanwhile).
            log.warning("review %s: Airflow's tool approval not answered: %s", review.id, exc)
            return False
    log.info("review %s (%s) answered the tool approval of %s", review.id, review.status, t)
    return True


def _answer(t: Any, approved: bool, params: dict[str, Any], user: Any, session: Any) -> None:
    """Airflow's own handler of a Required Actions answer, as the approver."""
    from airflow.api_fastapi.core_api.datamodels.hitl import UpdateHITLDetailPayload
    from airflow.api_fastapi.core_api.routes.public.hitl import update_hitl_detail
    from airflow.providers.common.ai.mixins.approval import LLMApprovalMixin

    update_hitl_detail(
        dag_id=t.dag_id,
        dag_run_id=t.run_id,
        task_id=t.task_id,
        update_hitl_detail_payload=UpdateHITLDetailPayload(
            chosen_options=[LLMApprovalMixin.APPROVE if approved else LLMApprovalMixin.REJECT],
            params_input=params,
        ),
        user=user,
        session=session,
        map_index=t.map_index,
    )
