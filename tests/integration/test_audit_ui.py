"""The Audit tab and page in a real Airflow: API-level (401, 403, content of a governed run)
and in Debian's Chromium (log in, open the task instance, click Audit), with screenshots.

The governed run is a real one: ``test_approval_flow`` triggered with a SQL comment holding
a ``<script>``, approved by alice in the UI with a ``<script>`` in her reason, then run by the
scheduler through the gateway. The Airflow services are the session's (approval_fixtures).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import socket
import subprocess
import sys
import tarfile
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
from click.testing import CliRunner
from support.approval_fixtures import decide_in_ui, pending_review

from airflow_hoop.cli.audit import audit_verify
from airflow_hoop.devstack.airflow_services import AirflowServices
from airflow_hoop.devstack.models import StackInfo

pytestmark = pytest.mark.airflow

FLOW = "test_approval_flow"
XSS_SQL = "<script>window.__xss = 4</script>"
XSS_REASON = "<script>window.__xss = 5</script><b>checked</b>"
IMAGES = Path(__file__).parents[2] / "docs" / "images"


@pytest.fixture(scope="module")
def governed(airflow_services: AirflowServices, stack: StackInfo) -> dict[str, Any]:
    """A run approved in the UI and run to success, its SQL carrying a <script> comment."""
    started = datetime.now(timezone.utc) - timedelta(seconds=5)
    table = f"audit_ui_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(stack.admin_dsn(stack.warehouse_db), autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, note text)")
        conn.execute(f"ALTER TABLE {table} OWNER TO warehouse_writer")
    run_id = airflow_services.trigger(
        FLOW, {"table": f"{table} /* {XSS_SQL} */", "why": "monthly load"}
    )
    airflow_services.wait_state(FLOW, run_id, "approve_load", {"deferred"}, timeout=120)
    review = pending_review(stack, run_id)
    decided = decide_in_ui(airflow_services, "alice", review, "APPROVED", XSS_REASON)
    assert decided.status_code == 303, decided.text
    airflow_services.wait_state(FLOW, run_id, "load", {"success"}, timeout=180)
    return {"run_id": run_id, "table": table, "review": review, "started": started}


def _ti(run_id: str, task_id: str = "load") -> str:
    return f"/hoop/audit/ti/{FLOW}/{quote(run_id, safe='')}/{task_id}?map_index={{MAP_INDEX}}"


# -- API level -----------------------------------------------------------------------------------
def test_unauthenticated_calls_get_401(airflow_services, governed):
    run = quote(governed["run_id"], safe="")
    with airflow_services.client(None) as anonymous:
        for path in (
            _ti(governed["run_id"]),
            f"/hoop/audit/run/{FLOW}/{run}",
            f"/hoop/audit/dag/{FLOW}",
            "/hoop/audit/",
            "/hoop/audit/export",
            f"/hoop/audit/badge/{FLOW}?first_seq=1&last_seq=2",
        ):
            assert anonymous.get(path).status_code == 401, path


def test_task_instance_tab_shows_the_governed_command(airflow_services, governed):
    with airflow_services.client("alice") as alice:
        page = alice.get(_ti(governed["run_id"]))
    assert page.status_code == 200, page.text
    html = page.text
    assert (
        "Content-Security-Policy" in page.headers
        and "script-src 'self'" in (page.headers["Content-Security-Policy"])
    )
    # The command, character for character, as escaped text; never as markup.
    assert (
        f"INSERT INTO {governed['table']} /* &lt;script&gt;window.__xss = 4&lt;/script&gt; */"
        in html
    )
    assert "<script>window.__xss" not in html and "<b>checked</b>" not in html
    assert "&lt;script&gt;window.__xss = 5&lt;/script&gt;&lt;b&gt;checked&lt;/b&gt;" in html
    # The approval: approver, channel; the runner, credential times, result.
    assert re.search(r'class="approver">alice</b>\s+via airflow-ui', html)
    assert re.search(r'class="runners">af_', html)
    assert "issued" in html and "revoked" in html
    row = re.search(r'<tr class="command".*?</tr>', html, re.S)
    assert row is not None
    cells = re.findall(r'<td class="(?:num|success|failed)">([^<]*)</td>', row.group(0))
    assert cells[:4] == ["1", "success", "0", "1"], cells  # index, status, exit code, rows
    assert "data-badge=" in html


def test_tab_of_a_task_without_governed_steps_says_so(airflow_services, governed):
    with airflow_services.client("alice") as alice:
        page = alice.get(_ti(governed["run_id"], "no_such_task"))
    assert page.status_code == 200
    assert "No governed step of this task instance is in the ledger" in page.text


def test_run_tab_and_dag_tab(airflow_services, governed):
    run_id = governed["run_id"]
    with airflow_services.client("alice") as alice:
        run = alice.get(f"/hoop/audit/run/{FLOW}/{quote(run_id, safe='')}")
        dag = alice.get(f"/hoop/audit/dag/{FLOW}")
    assert run.status_code == 200 and dag.status_code == 200
    assert 'id="step-approve_load-1"' in run.text and 'id="step-load-1"' in run.text
    assert "Approval requested" in run.text  # the sensor's step asked for it
    assert run_id in dag.text and 'class="run-link"' in dag.text


def test_badge_of_the_task(airflow_services, governed):
    with airflow_services.client("alice") as alice:
        html = alice.get(_ti(governed["run_id"])).text
        url = re.search(r'data-badge="([^"]+)"', html)
        assert url is not None
        badge = alice.get(url.group(1).replace("&amp;", "&"))
    assert badge.status_code == 200
    assert badge.json()["state"] in ("verified", "unsigned"), badge.json()


def test_search_finds_the_command_by_each_filter(airflow_services, governed):
    since = governed["started"].strftime("%Y-%m-%dT%H:%M:%S")
    with airflow_services.client("admin") as admin:
        for params in (
            {"dag_id": FLOW, "task_id": "load"},
            {"dag_id": FLOW, "status": "success", "since": since, "tz": "0"},
            {"connection": "warehouse", "user": "admin"},  # admin triggered the run
        ):
            page = admin.get("/hoop/audit/", params=params)
            assert page.status_code == 200, page.text
            assert governed["table"] in page.text, params
        none = admin.get("/hoop/audit/", params={"dag_id": FLOW, "status": "killed"})
        assert governed["table"] not in none.text
        assert "No governed command matches these filters" in none.text
        bad = admin.get("/hoop/audit/", params={"since": "yesterday"})
        assert bad.status_code == 400 and "is not a date and time" in bad.text


def test_export_downloads_a_bundle_that_verifies(airflow_services, governed, tmp_path):
    since = governed["started"].strftime("%Y-%m-%dT%H:%M:%S")
    until = (datetime.now(timezone.utc) + timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%S")
    with airflow_services.client("admin") as admin:
        answer = admin.get(
            "/hoop/audit/export", params={"since": since, "until": until, "tz": "0"}, timeout=300
        )
    assert answer.status_code == 200, answer.text[:2000]
    assert answer.headers["content-type"] == "application/gzip"
    assert "attachment;" in answer.headers["content-disposition"]
    with tarfile.open(fileobj=io.BytesIO(answer.content), mode="r:gz") as tar:
        tar.extractall(tmp_path, filter="data")
    (bundle,) = tmp_path.iterdir()
    assert governed["table"] in (bundle / "records.jsonl").read_text()
    result = CliRunner().invoke(audit_verify, ["--bundle", str(bundle)])
    assert result.exit_code == 0, result.output


# -- a user who may read only another DAG (a second API server on the same Airflow) ----------------
@pytest.fixture(scope="module")
def restricted(airflow_services: AirflowServices) -> Iterator[str]:
    """The same Airflow (database, users, JWT secret) behind an API server whose auth manager
    lets vic read only ``test_approval_timeout`` (tests/support/audit_auth_manager.py says why)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    env = {
        **airflow_services.api_env,
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": url,
        "AIRFLOW__CORE__AUTH_MANAGER": "support.audit_auth_manager.OneDagAuthManager",
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]
        ),
    }
    log = airflow_services.logs / "api-server-restricted.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "airflow", "api-server"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=airflow_services.home,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 90
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/api/v2/monitor/health", timeout=2).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"restricted api-server did not start: {log.read_text()[-2000:]}"
                )
            time.sleep(0.5)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def test_user_without_permission_on_the_dag_gets_403(airflow_services, governed, restricted):
    headers = {"Authorization": f"Bearer {airflow_services.token('vic')}"}
    run = quote(governed["run_id"], safe="")
    with httpx.Client(base_url=restricted, headers=headers, trust_env=False, timeout=60) as vic:
        for path in (
            _ti(governed["run_id"]),
            f"/hoop/audit/run/{FLOW}/{run}",
            f"/hoop/audit/dag/{FLOW}",
        ):
            page = vic.get(path)
            assert page.status_code == 403, path
            assert f"Permission missing: you may not read the task instances of DAG {FLOW}" in (
                page.text
            )
            assert governed["table"] not in page.text
        assert vic.get(f"/hoop/audit/badge/{FLOW}?first_seq=1&last_seq=2").status_code == 403
        # The search shows only the DAGs vic may read: not this run's command.
        search = vic.get("/hoop/audit/", params={"dag_id": FLOW})
        assert search.status_code == 200 and governed["table"] not in search.text
        everything = vic.get("/hoop/audit/")
        assert governed["table"] not in everything.text
        export = vic.get("/hoop/audit/export")
        assert (
            export.status_code == 403 and "exporting needs read access to every DAG" in export.text
        )
    # The same request as alice on that server: allowed (the 403 is about vic, not the server).
    alice = {"Authorization": f"Bearer {airflow_services.token('alice')}"}
    assert (
        httpx.get(restricted + _ti(governed["run_id"]), headers=alice, timeout=60).status_code
        == 200
    )


# -- in the browser ------------------------------------------------------------------------------
def _logged_in(chromium: Any, af: AirflowServices, user: str) -> Any:
    """A page logged in through Airflow's own login form."""
    context = chromium.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.goto(f"{af.url}/auth/login")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", af.passwords[user])
    page.click("button[type=submit]")
    page.wait_for_url(lambda u: "/auth/login" not in u, timeout=30_000)
    return page


def _access_audit_tab(page: Any, route: str) -> None:
    """Click the page's "Access audit" tab (a React view rendered in Airflow's page)."""
    tab = page.locator(f"a[href$='plugin/{route}']").first
    tab.wait_for(timeout=30_000)
    assert tab.inner_text().strip() == "Access audit"
    tab.click()


def test_browser_audit_tab_shows_the_command_and_scripts_as_text(
    browser,
    airflow_services,
    governed,
):
    IMAGES.mkdir(parents=True, exist_ok=True)
    page = _logged_in(browser, airflow_services, "alice")
    run_id = quote(governed["run_id"], safe="")
    page.goto(f"{airflow_services.url}/dags/{FLOW}/runs/{run_id}/tasks/load")
    _access_audit_tab(page, "hoop-access-audit-ti")
    page.get_by_test_id("hoop-commands").wait_for(timeout=30_000)
    script = page.locator("tr.hoop-command td.script pre").first.inner_text()
    assert f"/* {XSS_SQL} */" in script  # shown character for character
    assert XSS_REASON in page.locator(".approval .reason").first.inner_text()
    assert page.locator(".approval .approver").first.inner_text() == "alice"
    assert page.evaluate("window.__xss") is None
    # times in Airflow's format (the zone picked in its user menu, UTC by default)
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", page.locator("tr.hoop-command time").first.inner_text()
    )
    page.screenshot(path=str(IMAGES / "audit-tab.png"))

    page.goto(f"{airflow_services.url}/dags/{FLOW}/runs/{run_id}")
    _access_audit_tab(page, "hoop-access-audit-run")
    page.locator("#step-load-1").wait_for(timeout=30_000)
    assert page.locator("#step-approve_load-1").count() == 1
    page.screenshot(path=str(IMAGES / "audit-run-tab.png"))

    page.goto(f"{airflow_services.url}/plugin/hoop-access-audit")
    page.locator("#hoop-search-form").wait_for(timeout=30_000)
    page.fill("#hoop-search-form input[name=dag_id]", FLOW)
    page.select_option("#hoop-search-form select[name=status]", "success")
    page.click("#hoop-search-form button[type=submit]")
    page.wait_for_url("**dag_id=*", timeout=30_000)
    page.wait_for_function(
        "t => document.querySelector('[data-testid=hoop-results]')?.innerText.includes(t)",
        arg=governed["table"],
        timeout=30_000,
    )
    assert page.evaluate("window.__xss") is None
    page.screenshot(path=str(IMAGES / "audit-page.png"))
