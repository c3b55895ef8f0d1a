"""Approval notifications against the real stack (PostgreSQL, OpenBao, gateway processes).

Reviews are requested by real steps (their own Vault identities) and decided with the stack's
approver keys. The gateway webhook posts to a local receiver; Airflow's own ``SmtpNotifier``
mails a local SMTP sink (aiosmtpd). Nothing is mocked: a receiver that is down is a closed port,
a slow one is a server that holds the request.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import psycopg
import pytest
from support.gateway_support import CONNECTION, StepClient, extra_gateway, free_port, step_client
from support.notification_support import (
    Posted,
    WebhookReceiver,
    smtp_sink,
    wait_for,
    webhook_receiver,
)

from airflow_hoop.devstack.models import StackInfo
from airflow_hoop.gateway.approvals.webhook import verify_signature
from airflow_hoop.ledger.commands import command_sha256, parameters_sha256, statement_sha256
from airflow_hoop.ledger.records import StepRef
from airflow_hoop.wire.notifications import ApprovalNotification
from airflow_hoop.wire.reviews import Review, ReviewCreated

DAG = "test_approval_notify"
BASE = "https://airflow.example.test"
#: A literal of the command under review: never in a notification.
CARD = "4111-1111-1111-1111"
KEY = b"webhook-test-key-" + b"k" * 32


def _run() -> str:
    return f"manual__{uuid.uuid4().hex[:10]}"


def _notifications(webhook_url: str, secret_file: str, **extra: Any) -> dict[str, Any]:
    return {
        "webhook": {
            "url": webhook_url,
            "secret_file": secret_file,
            "timeout": 2,
            "attempts": 2,
            "backoff_seconds": 0.1,
        },
        "airflow_base_url": BASE,
        "poll_seconds": 0.2,
        **extra,
    }


@pytest.fixture(scope="module")
def secret_file(stack: StackInfo) -> str:
    path = Path(stack.run_dir) / f"webhook-{uuid.uuid4().hex[:6]}.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(KEY + b"\n")
    return str(path)


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as r:
        yield r


@pytest.fixture(scope="module")
def notify_url(stack: StackInfo, receiver: WebhookReceiver, secret_file: str) -> Iterator[str]:
    """A gateway process with the webhook configured (same database and Vault as the stack)."""
    with extra_gateway(
        stack, "notify", notifications=_notifications(receiver.url, secret_file)
    ) as url:
        yield url


@pytest.fixture(autouse=True)
def _receiver_ok(receiver: WebhookReceiver) -> Iterator[None]:
    receiver.mode = "ok"
    receiver.release.clear()
    receiver.arrived.clear()
    yield
    receiver.release.set()


def _ask(
    requester: StepClient,
    target_task: str,
    scripts: list[str],
    *,
    justification: str = "monthly payroll load",
    wait_seconds: float | None = None,
) -> httpx.Response:
    digests = [statement_sha256(s, parameters_sha256(None)) for s in scripts]
    body: dict[str, Any] = {
        "connection": CONNECTION,
        "target_task_id": target_task,
        "statements": [{"script": s} for s in scripts],
        "command_sha256": command_sha256(digests),
        "justification": justification,
    }
    if wait_seconds is not None:
        deadline = datetime.now(timezone.utc) + timedelta(seconds=wait_seconds)
        body["wait_deadline"] = deadline.isoformat()
    return requester.http.post("/api/airflow-hoop/reviews", json=body, headers=requester.headers())


def _created(response: httpx.Response) -> ReviewCreated:
    assert response.status_code in (200, 201), response.text
    return ReviewCreated.model_validate(response.json())


def _decide(url: str, key: str, review_id: str, status: str, reason: str | None = None) -> Any:
    body: dict[str, Any] = {"status": status}
    if reason:
        body["airflow_hoop"] = {"reason": reason}
    with httpx.Client(base_url=url, trust_env=False, timeout=30) as http:
        return http.put(
            f"/api/reviews/{review_id}", json=body, headers={"Authorization": f"Bearer {key}"}
        )


def _of_review(posted: list[Posted], review_id: str) -> list[tuple[Posted, ApprovalNotification]]:
    out = []
    for p in list(posted):
        n = ApprovalNotification.model_validate_json(p.body)
        if n.review_id == review_id:
            out.append((p, n))
    return out


def _rows(stack: StackInfo, review_id: str) -> dict[str, tuple[str, int, str | None]]:
    with psycopg.connect(stack.admin_dsn(stack.gateway_db)) as conn:
        found = conn.execute(
            "SELECT key, state, attempts, last_error FROM review_notifications "
            "WHERE review_id = %s",
            (uuid.UUID(review_id),),
        ).fetchall()
    return {k: (s, a, e) for k, s, a, e in found}


def _insert(table: str = "payroll") -> str:
    return f"INSERT INTO {table} (id, card) VALUES (1, '{CARD}')"


# -- the gateway webhook --------------------------------------------------------------------------
def test_webhook_posts_request_reminder_and_decision_signed(stack, notify_url, receiver):
    run_id = _run()
    with step_client(
        stack, StepRef(dag_id=DAG, task_id="approve", run_id=run_id), url=notify_url
    ) as sensor:
        created = _created(_ask(sensor, "load", [_insert()], wait_seconds=4))
    review_id = created.review.id
    # The reminder is due half-way through a wait shorter than twice the lead (2 s here).
    wait_for(lambda: len(_of_review(receiver.posted, review_id)) >= 2, what="request + reminder")
    assert _decide(notify_url, stack.reviewer_api_key, review_id, "APPROVED", "ok by me").is_success
    got = wait_for(
        lambda: (found := _of_review(receiver.posted, review_id)) and len(found) >= 3 and found,
        what="the decision",
    )
    assert [n.kind for _, n in got] == ["review.requested", "review.reminder", "review.decided"]
    link = f"{BASE}/dags/{DAG}/runs/{quote(run_id, safe='')}/tasks/load/plugin/hoop-approvals-ti"
    for posted, n in got:
        # A receiver holding the key can trust each body, and only that body.
        assert verify_signature(KEY, posted.body, posted.headers["x-hoop-signature-256"])
        assert not verify_signature(KEY, posted.body + b"x", posted.headers["x-hoop-signature-256"])
        assert posted.headers["x-hoop-event"] == n.kind
        assert posted.headers["x-hoop-delivery"] == n.id and n.id
        assert CARD.encode() not in posted.body
        assert n.link == link and n.dag_id == DAG and n.task_id == "load"
        assert "INSERT INTO payroll" in n.summary and "$1" in n.summary
    decided = got[2][1]
    assert decided.decision is not None and decided.decision.decision == "APPROVED"
    assert decided.decision.reason == "ok by me" and decided.status == "APPROVED"
    assert got[1][1].wait_deadline is not None
    expected = {"requested": "sent", "reminder": "sent", "decided:1": "sent"}
    wait_for(
        lambda: {k: v[0] for k, v in _rows(stack, review_id).items()} == expected,
        what=f"the deliveries recorded {expected}",
    )


def test_reminder_is_not_sent_once_decided(stack, notify_url, receiver):
    with step_client(
        stack, StepRef(dag_id=DAG, task_id="approve", run_id=_run()), url=notify_url
    ) as sensor:
        created = _created(_ask(sensor, "load", [_insert()], wait_seconds=6))
    review_id = created.review.id
    reason = "wrong table"
    assert _decide(notify_url, stack.reviewer_api_key, review_id, "REJECTED", reason).is_success
    wait_for(lambda: _rows(stack, review_id).get("reminder", ("",))[0] == "skipped", 15, "skip")
    kinds = [n.kind for _, n in _of_review(receiver.posted, review_id)]
    assert kinds == ["review.requested", "review.decided"]


def test_a_receiver_that_hangs_or_fails_never_blocks_or_fails_the_review(
    stack, notify_url, receiver
):
    receiver.mode = "hold"  # every POST waits for the test; the gateway's timeout is 2 s
    with step_client(
        stack, StepRef(dag_id=DAG, task_id="approve", run_id=_run()), url=notify_url
    ) as sensor:
        response = _ask(sensor, "load", [_insert()])
        assert not receiver.release.is_set()
        created = _created(response)
        # Answered before the delivery ended: the request did not wait for the receiver.
        state = _rows(stack, created.review.id).get("requested", ("sending",))[0]
        assert state == "sending", state
        wait_for(receiver.arrived.is_set, what="the webhook to arrive")
    review_id = created.review.id
    receiver.mode = "error"
    decided = _decide(notify_url, stack.reviewer_api_key, review_id, "APPROVED")
    assert decided.status_code == 200 and decided.json()["status"] == "APPROVED"
    receiver.release.set()
    rows = wait_for(
        lambda: (r := _rows(stack, review_id)) and all(v[0] == "failed" for v in r.values()) and r,
        what="both deliveries recorded failed",
    )
    # 1st attempt held past the 2 s timeout; the 2nd may meet the receiver's 500 already.
    assert rows["requested"][1] == 2
    assert any(e in (rows["requested"][2] or "") for e in ("ReadTimeout", "HTTP 500"))
    assert rows["decided:1"][1] == 2 and "HTTP 500" in (rows["decided:1"][2] or "")


def test_a_receiver_that_is_down_is_recorded_and_the_review_goes_on(stack, secret_file):
    down = f"http://127.0.0.1:{free_port()}/nobody"
    with extra_gateway(
        stack, "notify-down", notifications=_notifications(down, secret_file)
    ) as url:
        with step_client(
            stack, StepRef(dag_id=DAG, task_id="approve", run_id=_run()), url=url
        ) as sensor:
            created = _created(_ask(sensor, "load", [_insert()]))
        decided = _decide(url, stack.reviewer_api_key, created.review.id, "APPROVED")
        assert decided.json()["status"] == "APPROVED"
        rows = wait_for(
            lambda: (
                (r := _rows(stack, created.review.id))
                and len(r) == 2
                and all(v[0] == "failed" for v in r.values())
                and r
            ),
            what="failed deliveries",
        )
    assert all("ConnectError" in (error or "") for _, _, error in rows.values())


def test_hostile_fields_cannot_point_the_link_elsewhere_or_break_lines(stack, notify_url, receiver):
    run_id = _run()
    hostile_task = "../../../other_dag/runs/x/tasks/y?approve=1"
    with step_client(
        stack, StepRef(dag_id=DAG, task_id="approve", run_id=run_id), url=notify_url
    ) as sensor:
        created = _created(
            _ask(
                sensor,
                hostile_task,
                [_insert()],
                justification="fine\r\nX-Approved: yes\r\n\r\nhttps://evil.example/approve",
            )
        )
    (_, n), *_ = wait_for(lambda: _of_review(receiver.posted, created.review.id), what="request")
    # The DAG and run come from the requesting step's identity; the task part stays one segment.
    assert n.link is not None
    assert n.link.startswith(f"{BASE}/dags/{DAG}/runs/{quote(run_id, safe='')}/tasks/")
    assert "/other_dag/" not in n.link and "?" not in n.link
    assert "\r" not in n.justification and "\n" not in n.justification
    assert not any(line.startswith("X-Approved") for line in n.text.splitlines())


# -- Airflow's notifiers: SmtpNotifier into a local SMTP sink --------------------------------------
@pytest.fixture
def smtp(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    with smtp_sink() as (port, mails):
        conn = {
            "conn_type": "smtp",
            "host": "127.0.0.1",
            "port": port,
            "extra": {"disable_ssl": True, "disable_tls": True, "retry_limit": 0, "timeout": 5},
        }
        monkeypatch.setenv("AIRFLOW_CONN_HOOP_TEST_SMTP", json.dumps(conn))
        monkeypatch.setenv("AIRFLOW__HOOP__AIRFLOW_BASE_URL", BASE)
        yield mails


def _smtp_notifier(subject: str = "{{ hoop_notification.subject }}") -> Any:
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    return SmtpNotifier(
        to="approvers@example.test",
        from_email="airflow@example.test",
        subject=subject,
        html_content="{{ hoop_notification.html }}",
        smtp_conn_id="hoop_test_smtp",
    )


def _trigger_event(trigger: Any) -> dict[str, Any]:
    from airflow_hoop.triggers import review

    review._clients.clear()  # one client per event loop: this test makes a loop per call

    async def first() -> dict[str, Any]:
        async for event in trigger.run():
            return dict(event.payload)
        raise AssertionError("the trigger ended without an event")

    return asyncio.run(asyncio.wait_for(first(), 30))


def test_smtp_notifier_mails_request_reminder_and_decision(stack, smtp):
    from airflow_hoop.operators import approval_notify
    from airflow_hoop.operators.approval_request import GatewayAddress, trigger_for

    notifier = _smtp_notifier()
    run_id = _run()
    with step_client(stack, StepRef(dag_id=DAG, task_id="approve", run_id=run_id)) as sensor:
        created = _created(_ask(sensor, "load", [_insert()]))
    context: dict[str, Any] = {"run_id": run_id}
    assert approval_notify.notify([notifier], context, created.review, "review.requested") == 1
    # The trigger wakes the task for its reminder while the review is pending...
    remind = trigger_for(created, GatewayAddress(stack.gateway_url), 0.2, remind_at=0.0)
    event = _trigger_event(remind)
    assert event["status"] == approval_notify.REMIND
    review = Review.model_validate(event["review"])
    assert approval_notify.notify([notifier], context, review, "review.reminder") == 1
    # ... and once decided, the decision is posted back.
    assert _decide(
        stack.gateway_url, stack.reviewer_api_key, created.review.id, "REJECTED", "not this month"
    ).is_success
    event = _trigger_event(trigger_for(created, GatewayAddress(stack.gateway_url), 0.2))
    decided = approval_notify.decided_review(event)
    assert decided is not None
    assert approval_notify.notify([notifier], context, decided, "review.decided") == 1
    assert len(smtp) == 3
    link = f"{BASE}/dags/{DAG}/runs/{quote(run_id, safe='')}/tasks/load/plugin/hoop-approvals-ti"
    subjects = [m.message["Subject"] for m in smtp]
    assert subjects[0].startswith(f"Approval requested: {DAG}.load")
    assert subjects[1].startswith("Reminder, approval still pending")
    assert subjects[2].startswith("Review rejected by api-key:devstack-reviewer")
    for mail in smtp:
        assert mail.rcpt_tos == ["approvers@example.test"]
        assert CARD not in mail.raw.decode(errors="replace") and CARD not in mail.text()
        assert f'href="{link}"' in mail.text()
        assert "INSERT INTO payroll" in mail.text()
    assert "not this month" in smtp[2].text()


def test_a_dag_author_cannot_add_mail_headers_or_recipients(stack, smtp):
    from airflow_hoop.operators import approval_notify

    hostile = "load\r\nBcc: attacker@evil.example\r\nX-Approved: yes"
    # The author's own template puts the justification into the subject: still one line.
    notifier = _smtp_notifier(
        "{{ hoop_notification.subject }} {{ hoop_notification.justification }}"
    )
    with step_client(stack, StepRef(dag_id=DAG, task_id="approve", run_id=_run())) as sensor:
        created = _created(_ask(sensor, "load", [_insert()], justification=hostile))
    assert approval_notify.notify([notifier], {}, created.review, "review.requested") == 1
    (mail,) = smtp
    assert mail.rcpt_tos == ["approvers@example.test"]
    message = mail.message
    assert message["Bcc"] is None and message["X-Approved"] is None
    assert "Bcc: attacker@evil.example" in message["Subject"]  # as text, inside the subject


def test_a_failing_notifier_is_logged_and_the_others_still_send(stack, smtp, caplog, capsys):
    from airflow_hoop.operators import approval_notify

    def broken(context: Any) -> None:
        raise RuntimeError("chat relay refused")

    with step_client(stack, StepRef(dag_id=DAG, task_id="approve", run_id=_run())) as sensor:
        created = _created(_ask(sensor, "load", [_insert()]))
    notifiers = [broken, _smtp_notifier()]
    assert approval_notify.notify(notifiers, {}, created.review, "review.requested") == 1
    assert len(smtp) == 1
    logged = caplog.text + capsys.readouterr().out  # Airflow's structlog may print instead
    assert "chat relay refused" in logged and "the review goes on" in logged


def test_a_poking_sensor_reminds_once_across_pokes_and_processes(stack, smtp):
    """No trigger wakes a sensor in poke or reschedule mode: each poke past the reminder time
    asks the gateway, which grants the review's one reminder to the first (reschedule mode
    runs every poke in a new process, so the task cannot remember it sent one)."""
    from airflow_hoop.operators import approval_notify

    notifier = _smtp_notifier()
    run_id = _run()
    step = StepRef(dag_id=DAG, task_id="approve", run_id=run_id)
    with step_client(stack, step) as sensor:  # two pokes: the open review, two poll tokens
        pokes = [_created(_ask(sensor, "load", [_insert()])) for _ in range(2)]
    assert pokes[0].review.id == pokes[1].review.id
    # A short wait: the reminder is due half-way through it.
    deadline = pokes[0].review.created_at + timedelta(seconds=2)
    due = approval_notify.remind_at(pokes[0].review.created_at, deadline)
    assert due is not None
    time.sleep(max(0.0, due - time.time()) + 0.1)
    forged = pokes[0].model_copy(update={"poll_token": "hrt_not-the-token"})
    assert not approval_notify.remind_if_due([notifier], {}, forged, stack.gateway_url, deadline)
    sent = [
        approval_notify.remind_if_due([notifier], {}, p, stack.gateway_url, deadline) for p in pokes
    ]
    assert sent == [True, False]
    assert [m.message["Subject"].split(":")[0] for m in smtp] == [
        "Reminder, approval still pending"
    ]
    far = datetime.now(timezone.utc) + timedelta(days=2)  # not due yet: no claim at all
    with step_client(stack, StepRef(dag_id=DAG, task_id="approve", run_id=_run())) as sensor:
        early = _created(_ask(sensor, "load", [_insert()]))
    assert not approval_notify.remind_if_due([notifier], {}, early, stack.gateway_url, far)
    assert "reminder:task" not in _rows(stack, early.review.id)


# -- nothing lost when a gateway process dies mid-notification ----------------------------------
def test_a_cut_delivery_is_sent_again_and_an_unannounced_review_gets_its_request(
    stack, receiver, secret_file
):
    """Two deaths of a gateway process, played on the database: one between a review's commit
    and its notification (the stack's own gateway has no webhook: no row at all), one after a
    delivery was claimed (a 'sending' row claimed an hour ago). A gateway with the webhook
    finds both on its sweep and sends them: at least once, never lost."""
    with step_client(stack, StepRef(dag_id=DAG, task_id="approve", run_id=_run())) as sensor:
        unannounced = _created(_ask(sensor, "load", [_insert()])).review.id
    with step_client(stack, StepRef(dag_id=DAG, task_id="approve", run_id=_run())) as sensor:
        cut = _created(_ask(sensor, "load", [_insert()])).review.id
    assert _rows(stack, unannounced) == {} and _rows(stack, cut) == {}
    with psycopg.connect(stack.admin_dsn(stack.gateway_db), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO review_notifications (id, review_id, key, kind, state, due_at, "
            "claimed_at) VALUES (%s, %s, 'requested', 'review.requested', 'sending', "
            "now() - interval '1 hour', now() - interval '1 hour')",
            (uuid.uuid4(), uuid.UUID(cut)),
        )
    settings = _notifications(receiver.url, secret_file, resend_after_seconds=1)
    with extra_gateway(stack, "notify-recover", notifications=settings):
        for review_id in (unannounced, cut):
            got = wait_for(
                lambda r=review_id: _of_review(receiver.posted, r), what=f"review {review_id}"
            )
            assert [n.kind for _, n in got] == ["review.requested"]
            assert CARD.encode() not in got[0][0].body
            wait_for(
                lambda r=review_id: _rows(stack, r).get("requested", ("",))[0] == "sent",
                what="the delivery recorded sent",
            )


def test_a_decision_left_unsent_by_a_dead_process_is_sent_by_the_sweep(
    stack, receiver, secret_file
):
    """A gateway process that dies between a decision's commit and its notification leaves
    no ``decided:<n>`` row (played by deciding on the stack's own gateway, which has no
    webhook). A gateway with the webhook sends it on its sweep: the decision as it was made."""
    with step_client(stack, StepRef(dag_id=DAG, task_id="approve", run_id=_run())) as sensor:
        review_id = _created(_ask(sensor, "load", [_insert()])).review.id
    decided = _decide(stack.gateway_url, stack.reviewer_api_key, review_id, "REJECTED", "no")
    assert decided.status_code == 200, decided.text
    assert "decided:1" not in _rows(stack, review_id)
    settings = _notifications(receiver.url, secret_file, resend_after_seconds=1)
    with extra_gateway(stack, "notify-decisions", notifications=settings):
        got = wait_for(
            lambda: [n for _, n in _of_review(receiver.posted, review_id) if n.decision],
            what="the decision's notification",
        )
        wait_for(
            lambda: _rows(stack, review_id).get("decided:1", ("",))[0] == "sent",
            what="the decision recorded sent",
        )
    assert len(got) == 1 and got[0].decision is not None
    assert (got[0].decision.decision, got[0].decision.reason) == ("REJECTED", "no")
