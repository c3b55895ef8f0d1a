"""Every request of an ended step is refused (401, recorded), on every gateway process.

A step's identity token stays a valid JWT until its ``exp``: ending the step (or revoking its
Vault token) does not unsign it. So the gateway keeps the ended steps (``gateway_steps``,
db/step_claims.py) and checks each request's step against them:

- in memory first (``StepTenure.ended``, execution/step_tenure.py: this process's ends, the step-end bus's NOTIFYs,
  and the table's recent ends loaded at start and on each reconnect of the bus): no round trip;
- in the table the first time this process sees a step (a process started after the end, or
  one whose bus missed the NOTIFY), one round trip per step and process;
- and the claim before any credential is minted refuses an ended step in the same statement
  (``StepTenure.claim`` in ``StepRegistry.acquire``), so no database user is ever issued to an ended step.
"""

from __future__ import annotations

from collections import OrderedDict

from airflow_hoop.gateway.execution.steps import StepRegistry
from airflow_hoop.ledger.records import StepRef

#: Steps this process checked in the table and found live; the oldest are checked again.
_MAX_CHECKED = 4096


class EndedStepGuard:
    """Refuses the requests of ended steps; the refusal is recorded in the ledger."""

    def __init__(self, registry: StepRegistry) -> None:
        self._registry = registry
        self._checked: OrderedDict[str, None] = OrderedDict()

    async def check(self, step: StepRef, issued_at: float, connection: str = "-") -> None:
        """Raise StepEndedError (401) if ``step`` ended after its token was issued (``iat``),
        after recording the refusal."""
        registry = self._registry
        if step.key not in registry.tenure.ended:
            if step.key in self._checked:
                return
            ended_at = await registry.tenure.claims.ended_at(step.key)
            if ended_at is None:
                self._checked[step.key] = None
                while len(self._checked) > _MAX_CHECKED:
                    self._checked.popitem(last=False)
                return
            registry.tenure.ended[step.key] = ended_at
        if not registry.tenure.ended_for(step, issued_at):
            return  # a token issued after the end: the task resumed after a deferral
        self._checked.pop(step.key, None)
        await registry.tenure.record_refusal(step, connection, "step ended (auth refused)")
        raise registry.tenure.refused_ended(step)
