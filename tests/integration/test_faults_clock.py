"""Fault: clock skew between Vault (which signs identity tokens) and the gateway.

How the skew is produced, honestly: an identity token is signed by Vault with Vault's clock
(``iat`` now, ``exp`` now + 5 min for the devstack role), so "a host whose clock is 10 minutes
ahead" matters only as the skew between Vault and the gateway. Here the *gateway* process runs
with its wall clock shifted by libfaketime (LD_PRELOAD, wall clock only; monotonic time stays
real): a real Vault token, a real gateway, a real skew. A gateway 10 min ahead is Vault 10 min
behind, and the other way round. Nothing in the product has a test hook for the clock.

The documented leeway (docs/faults.md): ``token_leeway_seconds``, default 30 s, applied to
``exp``, ``iat`` and ``nbf``. Skew within it is accepted; 10 min either way is refused with a
message naming the clocks, unless the leeway is raised to cover it.
"""

from __future__ import annotations

import pytest
from support.faults_support import faked_clock, gateways
from support.gateway_support import new_step, step_client

from airflow_hoop.devstack.models import StackInfo

TEN_MINUTES = 600


pytestmark = pytest.mark.faults


def test_identity_tokens_under_clock_skew_follow_the_leeway(fstack: StackInfo) -> None:
    cases = [
        # (name, gateway clock offset, leeway, accepted, message)
        ("ahead-10m", TEN_MINUTES, 30, False, "identity token expired"),
        ("behind-10m", -TEN_MINUTES, 30, False, "identity token is not valid yet"),
        ("behind-20s", -20, 30, True, None),
        ("ahead-10m-wide", TEN_MINUTES, TEN_MINUTES + 60, True, None),
        ("behind-10m-wide", -TEN_MINUTES, TEN_MINUTES + 60, True, None),
    ]
    specs = [
        (name, {"env": faked_clock(offset), "token_leeway_seconds": leeway})
        for name, offset, leeway, _, _ in cases
    ]
    with gateways(fstack, *specs) as procs:
        for (name, _offset, _leeway, accepted, message), proc in zip(cases, procs, strict=True):
            with step_client(fstack, new_step("test_faults"), url=proc.url) as step:
                answer = step.exec("SELECT 1")
                if accepted:
                    assert answer.status_code == 200, (name, answer.text)
                else:
                    assert answer.status_code == 401, (name, answer.text)
                    text = answer.json()["message"]
                    assert message in text and "clock" in text and "Fix:" in text, text
                    assert "token_leeway_seconds" in text
