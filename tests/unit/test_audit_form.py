"""The Audit pages without services: search form, per-row filters, views of records, errors."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from airflow_hoop.plugins.audit.form import SearchForm
from airflow_hoop.plugins.common import text_block, when
from airflow_hoop.wire.audit import MAX_DAG_IDS


def test_form_times_are_read_in_the_browsers_zone():
    # getTimezoneOffset() is -60 in UTC+1: 10:00 there is 09:00 UTC.
    form = SearchForm(since="2026-11-23T10:00", until="2026-11-23T10:30:15", tz=-60)
    query = form.to_query(None)
    assert query.since == datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)
    assert query.until == datetime(2026, 11, 23, 9, 30, 15, tzinfo=timezone.utc)
    assert SearchForm(since="2026-11-23T10:00").to_query(None).since == datetime(
        2026, 11, 23, 10, 0, tzinfo=timezone.utc
    )
    with pytest.raises(ValueError, match="is not a date and time"):
        SearchForm(since="last tuesday").to_query(None)
    with pytest.raises(ValueError, match="Until must be after From"):
        SearchForm(since="2026-11-23T10:00", until="2026-11-23T09:00").to_query(None)


def test_form_limits_the_search_to_readable_dags():
    assert SearchForm().to_query(None).dag_ids is None  # may read every DAG
    assert SearchForm().to_query({"b", "a"}).dag_ids == ["a", "b"]
    assert SearchForm(dag_id="a").to_query({"a"}).dag_id == "a"
    # A DAG the user may not read: an empty answer, not an error that confirms it exists.
    assert SearchForm(dag_id="secret").to_query({"a"}).dag_ids == []
    with pytest.raises(ValueError, match="pick a DAG"):
        SearchForm().to_query({f"d{i}" for i in range(MAX_DAG_IDS + 1)})


def test_form_round_trips_through_the_next_page_link():
    form = SearchForm(dag_id="etl", status="failed", tz=120, before_seq=77)
    assert form.query_params(55) == {
        "dag_id": "etl",
        "status": "failed",
        "tz": 120,
        "before_seq": 55,
    }
    assert "before_seq" not in form.query_params(paging=False)
    assert form.filtered and not SearchForm(tz=60).filtered


def test_text_and_times_are_escaped_and_long_text_collapses():
    short = text_block("/* <script>alert(1)</script> */ SELECT 1", "sql")
    assert short == ('<pre class="sql">/* &lt;script&gt;alert(1)&lt;/script&gt; */ SELECT 1</pre>')
    long = str(text_block("SELECT <b>\n" + "x\n" * 10, '"><img src=x>'))
    assert long.startswith(
        '<details class="&#34;&gt;&lt;img src=x&gt;"><summary><code>SELECT &lt;b&gt;'
    )
    assert "<b>" not in long and "<img" not in long and "31 characters" in long
    stamp = when(datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc))
    assert stamp == '<time datetime="2026-01-02T03:04:05+00:00">2026-01-02 03:04:05 UTC</time>'


def test_an_unreachable_gateway_page_names_the_url_it_tried():
    import socket
    import time

    from airflow_hoop.client.audit_views import AuditViewsClient
    from airflow_hoop.errors import GatewayUnavailableError
    from airflow_hoop.plugins.audit.pages import gateway_error

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    with (
        AuditViewsClient(url, "hpk_unused", timeout=2) as client,
        pytest.raises(GatewayUnavailableError) as failed,
    ):
        client.run_records("dag", "run")
    page = gateway_error(failed.value, time.perf_counter())
    body = bytes(page.body).decode()
    assert page.status_code == 502
    assert f"The gateway is unreachable: cannot reach the gateway at {url}" in body


def _records(step: dict[str, object], bodies: list[tuple[dict[str, object], dict[str, object]]]):
    """Records as the gateway's /audit/run answers them (JSON objects, in order)."""
    now = datetime.now(timezone.utc).isoformat()
    return [
        {
            "v": 1,
            "seq": seq,
            "time": now,
            "prev_hash": "0" * 64,
            "step": s or step,
            "actor": "x",
            "body": body,
        }
        for seq, (body, s) in enumerate(bodies, start=1)
    ]


def test_every_field_of_every_record_kind_renders_as_text():
    """Records as the gateway writes them (shapes only): each text field carries markup."""
    from urllib.parse import quote

    from airflow_hoop.plugins.audit.model import build_steps, select_try
    from airflow_hoop.plugins.common import templates
    from airflow_hoop.wire.audit import RunRecords, StoredOutput

    step = {"dag_id": "d", "task_id": "t", "run_id": "r", "try_number": 1, "map_index": -1}
    sensor = {**step, "task_id": "sensor"}
    digest = "0" * 64
    review = {"review_id": "rv", "connection": "w", "command_sha256": digest}
    records = _records(
        step,
        [
            (
                {
                    "kind": "credential.issued",
                    "connection": "w",
                    "lease_id": "l",
                    "db_user": "<u1>",
                    "vault_role": "r",
                    "ttl_seconds": 1,
                },
                {},
            ),
            (
                {
                    "kind": "review.requested",
                    **review,
                    "session_id": "s0",
                    "target": {"dag_id": "d", "task_id": "t", "run_id": "r"},
                    "statements": [],
                    "justification": "<i>why</i>",
                    "groups": [],
                    "min_approvals": 1,
                    "expires_after_seconds": 1,
                },
                sensor,
            ),
            (
                {
                    "kind": "review.decided",
                    **review,
                    "decision": "APPROVED",
                    "status": "APPROVED",
                    "approver": "<al>",
                    "credential": "c",
                    "channel": "airflow-ui",
                    "reason": "<script>r</script>",
                },
                sensor,
            ),
            (
                {
                    "kind": "review.executed",
                    **review,
                    "statement_index": 0,
                    "statement_sha256": digest,
                    "try_number": 1,
                    "remaining": 0,
                },
                {},
            ),
            (
                {
                    "kind": "session.intent",
                    "session_id": "s1",
                    "connection": "<w>",
                    "script": "SELECT 1 -- <b>x</b>\n" * 5,
                    "script_sha256": digest,
                    "db_user": "<u1>",
                },
                {},
            ),
            (
                {
                    "kind": "session.result",
                    "session_id": "s1",
                    "connection": "<w>",
                    "status": "failed",
                    "exit_code": 1,
                    "output_sha256": digest,
                    "duration_ms": 1.5,
                    "error": "<e>",
                    "masking": {
                        "policy": "p",
                        "version": digest,
                        "mode": "strict",
                        "total_redact_count": 3,
                    },
                },
                {},
            ),
            ({"kind": "policy.refused", "connection": "w", "reason": "no <way>"}, {}),
            (
                {
                    "kind": "credential.revoked",
                    "connection": "w",
                    "lease_id": "l",
                    "db_user": "<u1>",
                    "reason": "step-end",
                },
                {},
            ),
        ],
    )
    data = RunRecords(records=records, outputs={"s1": StoredOutput(output="<out>")})
    steps = build_steps(data)
    chosen, tries = select_try(steps, "t", -1, None)
    assert chosen is not None and tries == [1]
    command = chosen.commands[0]
    assert (command.status, command.exit_code, command.masked) == ("failed", 1, 3)
    assert command.approval is not None and command.approval.decisions[0].approver == "<al>"
    html = (
        templates()
        .get_template("audit_ti.html")
        .render(
            prefix="/hoop/audit",
            quote=quote,
            dag_id="d",
            run_id="r",
            task_id="t",
            map_index=-1,
            step=chosen,
            tries=tries,
            try_number=None,
            commands=chosen.commands,
            page=1,
            pages=1,
            first_index=1,
            last_index=1,
            truncated=False,
            self_url="/x?y=1",
        )
    )
    for text in (
        "<u1>",
        "<al>",
        "<script>r</script>",
        "<i>why</i>",
        "<b>x</b>",
        "<out>",
        "<e>",
        "no <way>",
        "<w>",
    ):
        assert text not in html, text
    for text in (
        "&lt;u1&gt;",
        "&lt;al&gt;",
        "&lt;script&gt;r&lt;/script&gt;",
        "&lt;out&gt;",
        "&lt;e&gt;",
        "no &lt;way&gt;",
        "masked: 3 redactions",
    ):
        assert text in html, text
    run = (
        templates()
        .get_template("audit_run.html")
        .render(
            prefix="/hoop/audit",
            quote=quote,
            dag_id="d",
            run_id="r",
            all_steps=steps,
            steps=steps,
            per_step=50,
            page=1,
            pages=1,
            truncated=False,
        )
    )
    assert "Approval requested" in run and "&lt;i&gt;why&lt;/i&gt;" in run
