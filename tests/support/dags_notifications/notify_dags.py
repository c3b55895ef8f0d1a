"""DAGs of the approval-notification tests: an operator with ``requires_approval=True`` and a
sensor, each with Airflow's own ``SmtpNotifier`` (connection ``hoop_test_smtp``: the test's SMTP
sink). The SQL holds a card-number literal that no notification may show."""

from __future__ import annotations

from datetime import datetime

from airflow.providers.smtp.notifications.smtp import SmtpNotifier
from airflow.sdk import DAG

from airflow_hoop.operators.postgres import HoopPostgresOperator
from airflow_hoop.sensors.approval import HoopApprovalSensor

INSERT = "INSERT INTO {{ dag_run.conf['table'] }} (id, note) VALUES (1, '4111-1111-1111-1111')"
DEFAULTS = {"retries": 0}
MAIL = SmtpNotifier(
    to="approvers@example.test",
    from_email="airflow@example.test",
    subject="{{ hoop_notification.subject }}",
    html_content="{{ hoop_notification.html }}",
    smtp_conn_id="hoop_test_smtp",
)

with DAG(
    "test_approval_notify_op", schedule=None, start_date=datetime(2026, 1, 1), default_args=DEFAULTS
):
    HoopPostgresOperator(
        task_id="load",
        conn_id="warehouse_via_hoop",
        sql=INSERT,
        requires_approval=True,
        approval_justification="load {{ dag_run.conf['table'] }}",
        approval_timeout=60,
        approval_notifiers=[MAIL],
    )

with DAG(
    "test_approval_notify_sensor",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    default_args=DEFAULTS,
):
    (
        HoopApprovalSensor(
            task_id="approve_load",
            target_task_id="load",
            justification="load {{ dag_run.conf['table'] }}",
            timeout=60,
            approval_notifiers=MAIL,
        )
        >> HoopPostgresOperator(task_id="load", conn_id="warehouse_via_hoop", sql=INSERT)
    )
