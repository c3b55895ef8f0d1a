"""Approval notifications without a stack: the payload (summary, one-line fields, link), the
webhook's signature and the settings' checks of its secret file. The deliveries themselves are
tested against real receivers in tests/integration/test_notifications.py."""

from __future__ import annotations

import os
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from pydantic import ValidationError

from airflow_hoop.gateway.approvals.webhook import signature, verify_signature
from airflow_hoop.gateway.notification_settings import NotificationSettings, WebhookSettings
from airflow_hoop.ledger.commands import command_sha256, parameters_sha256, statement_sha256
from airflow_hoop.ledger.records import ReviewTarget
from airflow_hoop.wire.notifications import (
    ApprovalNotification,
    approvals_link,
    one_line,
    reminder_time,
    summarize,
)
from airflow_hoop.wire.reviews import DecisionRecord, Review, ReviewExtension

BASE = "https://airflow.example.com"
SECRET_LITERAL = "4111-1111-1111-1111"


def _review(
    scripts: list[str],
    *,
    dag_id: str = "payroll",
    task_id: str = "load",
    justification: str = "monthly load",
    decisions: list[DecisionRecord] | None = None,
    status: str = "PENDING",
) -> Review:
    statements = []
    for s in scripts:
        digest = statement_sha256(s, parameters_sha256(None))
        statements.append({"script": s, "sha256": digest, "parameters_sha256": None})
    return Review(
        id=str(uuid.uuid4()),
        session=str(uuid.uuid4()),
        status=status,  # type: ignore[arg-type]
        created_at=datetime.now(timezone.utc),
        airflow_hoop=ReviewExtension(
            connection="warehouse",
            target=ReviewTarget(dag_id=dag_id, task_id=task_id, run_id="manual__2026-01-01"),
            requester=f"{dag_id}/approve/manual__2026-01-01/1",
            justification=justification,
            command_sha256=command_sha256([s["sha256"] for s in statements]),
            statements=statements,  # type: ignore[arg-type]
            expires_after_seconds=3600,
            decisions=decisions or [],
        ),
    )


# -- the summary: literals never shown ------------------------------------------------------------
def test_summary_replaces_every_literal_and_drops_comments():
    text = summarize(
        [
            f"INSERT INTO cards (no, note) VALUES ('{SECRET_LITERAL}', 42) -- pw=hunter2",
            "UPDATE t SET secret = $$dollar quoted hunter3$$ /* token=abc */ WHERE id = 7",
            "select * from t where n = 3.14 and b = B'101' and x = E'\\x41'",
        ],
        "ab" * 32,
    )
    for leaked in (SECRET_LITERAL, "hunter2", "hunter3", "token=abc", "42", "3.14", "101"):
        assert leaked not in text
    assert "INSERT INTO cards" in text and "$1" in text and "UPDATE t SET secret = $" in text
    assert "abababababababab" in text  # the digest names the command


def test_summary_of_a_script_that_is_not_sql_shows_no_text():
    text = summarize([f"curl -u admin:{SECRET_LITERAL} https://x\necho done"], "cd" * 32)
    assert SECRET_LITERAL not in text and "curl" not in text
    assert "script of 2 line(s), not shown" in text


def test_summary_is_capped_in_statements_and_length():
    scripts = [f"UPDATE t{i} SET a = 1 WHERE {'b = 2 AND ' * 200} c = 3" for i in range(9)]
    text = summarize(scripts, "ef" * 32)
    assert "(+4 more statement(s))" in text
    assert len(text) <= 1500
    assert all(len(line) <= 300 for line in text.splitlines())


# -- one-line fields: no header or line can be added ---------------------------------------------
@pytest.mark.parametrize("sep", ["\r\n", "\n", "\r", "\u2028", "\u2029", "\x85", "\x0b", "\x00"])
def test_every_line_break_and_control_character_becomes_a_space(sep):
    assert one_line(f"ok{sep}Bcc: evil@example.com") == "ok Bcc: evil@example.com"


def test_a_notification_is_one_line_per_field_whatever_the_dag_author_wrote():
    hostile = "load\r\nBcc: evil@example.com\r\n\r\n<script>x</script>"
    n = ApprovalNotification.of_review(
        _review(["DELETE FROM t"], task_id=hostile, justification=hostile),
        "review.requested",
        base_url=BASE,
    )
    for value in (n.task_id, n.justification, n.subject):
        assert "\r" not in value and "\n" not in value
    assert "<script>" not in n.html and "&lt;script&gt;" in n.html
    # the text body keeps its own lines, but no field starts one
    assert not any(line.startswith("Bcc:") for line in n.text.splitlines())


# -- the link -------------------------------------------------------------------------------------
def test_link_is_the_target_task_instances_approvals_tab():
    assert approvals_link(BASE + "/", "payroll", "manual__2026-01-01T00:00:00+00:00", "load") == (
        f"{BASE}/dags/payroll/runs/manual__2026-01-01T00%3A00%3A00%2B00%3A00/tasks/load"
        "/plugin/hoop-approvals-ti"
    )
    assert (
        approvals_link(BASE, "d", "r", "t", 3)
        == f"{BASE}/dags/d/runs/r/tasks/t/mapped/3/plugin/hoop-approvals-ti"
    )


def test_link_parts_cannot_leave_their_segment():
    link = approvals_link(BASE, "payroll", "r", "../../../dags/other_dag/runs/x/tasks/y?a=1#f")
    assert link is not None
    assert link.startswith(f"{BASE}/dags/payroll/runs/r/tasks/")
    assert "/other_dag/" not in link and "?" not in link and "#" not in link
    # a part a browser would resolve as '..' leads to the Approvals page instead
    assert approvals_link(BASE, "payroll", "r", "..") == f"{BASE}/plugin/hoop-approvals"


@pytest.mark.parametrize("base", [None, "", "javascript:alert(1)", "ftp://x", "//evil.example"])
def test_no_link_without_an_http_base(base):
    assert approvals_link(base, "d", "r", "t") is None


# -- decisions and reminders ----------------------------------------------------------------------
def test_decision_notification_names_who_and_why():
    decision = DecisionRecord(
        decision="REJECTED",
        approver="bob\nX-Injected: 1",
        credential="airflow-ui",
        channel="airflow-ui",
        reason="wrong month\r\nsee ticket",
        time=datetime.now(timezone.utc),
    )
    n = ApprovalNotification.of_review(
        _review(["DELETE FROM t"], decisions=[decision], status="REJECTED"),
        "review.decided",
        base_url=BASE,
    )
    assert n.decision is not None and n.decision.approver == "bob X-Injected: 1"
    assert n.subject.startswith("Review rejected by bob X-Injected: 1: payroll.load")
    assert "wrong month see ticket" in n.text


def test_reminder_goes_out_the_lead_before_the_deadline_or_half_way():
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert reminder_time(t0, t0 + timedelta(hours=24), 600) == t0 + timedelta(hours=24, minutes=-10)
    assert reminder_time(t0, t0 + timedelta(minutes=10), 600) == t0 + timedelta(minutes=5)


# -- the webhook's signature and secret -----------------------------------------------------------
def test_signature_verifies_the_exact_body_only():
    key = b"k" * 32
    body = b'{"kind":"review.requested"}'
    header = signature(key, body)
    assert header.startswith("sha256=") and verify_signature(key, body, header)
    assert not verify_signature(key, body + b" ", header)
    assert not verify_signature(b"x" * 32, body, header)
    assert not verify_signature(key, body, None)


def _secret(tmp_path: Path, mode: int, content: bytes = b"s" * 40) -> str:
    path = tmp_path / "webhook.key"
    path.write_bytes(content)
    os.chmod(path, mode)
    return str(path)


def test_webhook_secret_must_be_private(tmp_path):
    with pytest.raises(ValidationError, match="readable by others"):
        WebhookSettings(url="http://127.0.0.1:9/x", secret_file=_secret(tmp_path, 0o644))
    ok = WebhookSettings(url="http://127.0.0.1:9/x", secret_file=_secret(tmp_path, 0o600))
    assert ok.secret().get_secret_value() == "s" * 40
    assert "s" * 40 not in repr(ok) + repr(ok.secret())


def test_webhook_secret_too_short_and_bad_url_are_refused(tmp_path):
    with pytest.raises(ValidationError, match="fewer than 32 bytes"):
        WebhookSettings(
            url="https://hooks.example/x", secret_file=_secret(tmp_path, 0o600, b"short\n")
        )
    with pytest.raises(ValidationError, match="must be http"):
        WebhookSettings(url="file:///etc/passwd", secret_file=_secret(tmp_path, 0o600))
    with pytest.raises(ValidationError):
        NotificationSettings(webhook={"url": "http://x", "secret_file": "/nonexistent/key"})


def test_a_wait_deadline_without_a_time_zone_is_bad_input():
    from airflow_hoop.wire.reviews import ReviewCreate

    body = {
        "connection": "warehouse",
        "target_task_id": "load",
        "statements": [{"script": "DELETE FROM t"}],
        "command_sha256": "a" * 64,
    }
    with pytest.raises(ValidationError, match="timezone"):
        ReviewCreate.model_validate({**body, "wait_deadline": "2026-01-01T00:00:00"})
    ok = ReviewCreate.model_validate({**body, "wait_deadline": "2026-01-01T00:00:00+00:00"})
    assert ok.wait_deadline is not None


def test_a_wrong_default_notifier_setting_never_stops_the_wait(monkeypatch, caplog, capsys):
    from airflow_hoop.operators import approval_notify

    class Task:
        approval_notifiers = ["own"]

    for setting in ("no_such_module.notifier", "json.dumps"):  # not importable; factory fails
        monkeypatch.setenv("AIRFLOW__HOOP__APPROVAL_NOTIFIERS", setting)
        assert approval_notify.notifiers_of(Task()) == ["own"]
        # Airflow's logging may print (structlog) rather than reach caplog: read both.
        logged = caplog.text + capsys.readouterr().out
        assert "approval_notifiers" in logged and "approvals go on" in logged
        caplog.clear()
