"""The UI plugin: authentication (401), DAG permission (403), and escaping in a real browser.

The browser is Debian's headless Chromium driven by Playwright (``executable_path``; no
downloaded browser). Users: alice (role user: may decide), vic (viewer: may only read),
admin (triggered the run).
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import psycopg
import pytest
from support.approval_fixtures import pending_review

from airflow_hoop.devstack.airflow_services import AirflowServices
from airflow_hoop.devstack.models import StackInfo
from airflow_hoop.wire.reviews import Review

pytestmark = pytest.mark.airflow

FLOW = "test_approval_flow"
XSS_WHY = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'
XSS_REASON = "<script>window.__xss = 3</script><b>bold?</b>"


@pytest.fixture(scope="module")
def ui_run(airflow_services: AirflowServices, stack: StackInfo) -> dict[str, Any]:
    """A run waiting for approval, whose justification is an HTML/script payload."""
    table = f"appr_ui_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(stack.admin_dsn(stack.warehouse_db), autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, note text)")
        conn.execute(f"ALTER TABLE {table} OWNER TO warehouse_writer")
    run_id = airflow_services.trigger(FLOW, {"table": table, "why": XSS_WHY})
    airflow_services.wait_state(FLOW, run_id, "approve_load", {"deferred"}, timeout=120)
    review = pending_review(stack, run_id)
    return {"run_id": run_id, "review": review, "table": table}


def _ti_path(run_id: str, task_id: str = "load") -> str:
    from urllib.parse import quote

    return f"/hoop/approvals/ti/{FLOW}/{quote(run_id, safe='')}/{task_id}?map_index=-1"


def _form(review: Review, decision: str = "APPROVED", reason: str = "ok") -> dict[str, str]:
    assert review.airflow_hoop is not None
    return {
        "decision": decision,
        "reason": reason,
        "command_sha256": review.airflow_hoop.command_sha256,
    }


# -- authentication and authorisation ------------------------------------------------------------
def test_unauthenticated_calls_get_401(airflow_services, ui_run):
    review = ui_run["review"]
    with airflow_services.client(None) as anonymous:
        assert anonymous.get("/hoop/approvals/").status_code == 401
        assert anonymous.get(_ti_path(ui_run["run_id"])).status_code == 401
        decide = anonymous.post(f"/hoop/approvals/decide/{FLOW}/{review.id}", data=_form(review))
        assert decide.status_code == 401
        forged = anonymous.get("/hoop/approvals/", headers={"Authorization": "Bearer not-a-token"})
        assert forged.status_code in (401, 403)


def test_user_without_permission_on_the_dag_gets_403(airflow_services, ui_run, stack):
    review = ui_run["review"]
    with airflow_services.client("vic") as viewer:
        refused = viewer.post(f"/hoop/approvals/decide/{FLOW}/{review.id}", data=_form(review))
        assert refused.status_code == 403
        page = viewer.get(_ti_path(ui_run["run_id"]))
        assert page.status_code == 200  # viewers may read the review
        assert review.id in page.text and "<form" not in page.text  # but get no buttons
        listed = viewer.get("/hoop/approvals/")
        assert listed.status_code == 200 and review.id not in listed.text
    assert _status(stack, review.id) == "PENDING"


def test_cross_site_post_and_wrong_dag_path_are_refused(airflow_services, ui_run, stack):
    review = ui_run["review"]
    with airflow_services.client("alice") as alice:
        forged = alice.post(
            f"/hoop/approvals/decide/{FLOW}/{review.id}",
            data=_form(review),
            headers={"Origin": "http://evil.example"},
        )
        assert forged.status_code == 403
        elsewhere = alice.post(
            f"/hoop/approvals/decide/test_approval_timeout/{review.id}", data=_form(review)
        )
        assert elsewhere.status_code == 404
    assert _status(stack, review.id) == "PENDING"


def test_pending_page_lists_the_review_with_a_link_to_its_run(airflow_services, ui_run):
    with airflow_services.client("alice") as alice:
        page = alice.get("/hoop/approvals/")
    assert page.status_code == 200
    assert ui_run["review"].id in page.text
    assert f"/dags/{FLOW}/runs/" in page.text


# -- in the browser: HTML and scripts show as text -------------------------------------------------
def _page_as(browser: Any, af: AirflowServices, user: str) -> Any:
    context = browser.new_context()
    context.add_cookies([{"name": "_token", "value": af.token(user), "url": af.url}])
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.dialogs = dialogs
    return page


def test_browser_shows_script_as_text_and_rejects_with_an_escaped_reason(
    browser, airflow_services, ui_run, stack
):
    page = _page_as(browser, airflow_services, "alice")
    page.goto(airflow_services.url + _ti_path(ui_run["run_id"]))
    review = ui_run["review"]
    card = page.locator(f"#review-{review.id}")
    assert "PENDING" in card.inner_text()
    justification = card.locator(".justification").inner_text()
    assert XSS_WHY in justification  # the payload is shown, character for character
    # the approver sees the bound values too, not only the SQL text
    assert ui_run["run_id"] in card.locator(".parameters").inner_text()
    assert page.evaluate("window.__xss") is None
    assert page.evaluate("document.querySelectorAll('body script, body img').length") == 0

    page.fill("textarea[name=reason]", XSS_REASON)
    page.click("button[value=REJECTED]")
    page.wait_for_load_state()
    card = page.locator(f"#review-{review.id}")
    assert "REJECTED" in card.inner_text()
    assert XSS_REASON in card.locator(".decisions .reason").inner_text()
    assert page.evaluate("window.__xss") is None
    assert page.evaluate("document.querySelectorAll('body script, body b').length") == 0
    assert page.dialogs == []
    page.screenshot(path=str(airflow_services.home / "approvals-rejected.png"), full_page=True)
    assert _status(stack, review.id) == "REJECTED"
    airflow_services.wait_state(FLOW, ui_run["run_id"], "approve_load", {"failed"}, timeout=120)


def test_airflow_ui_shows_the_approvals_tab(browser, airflow_services, ui_run):
    page = _page_as(browser, airflow_services, "alice")
    run_id = ui_run["run_id"]
    from urllib.parse import quote

    page.goto(
        f"{airflow_services.url}/dags/{FLOW}/runs/{quote(run_id, safe='')}/tasks/load/"
        "plugin/hoop-approvals-ti"
    )
    # The React view, in Airflow's own page (no iframe)
    page.locator(f"[data-review='{ui_run['review'].id}']").wait_for(timeout=30_000)
    assert page.locator("iframe").count() == 0


def _status(stack: StackInfo, review_id: str) -> str:
    with httpx.Client(
        base_url=stack.gateway_url,
        headers={"Authorization": f"Bearer {stack.auditor_api_key}"},
        trust_env=False,
    ) as gateway:
        return str(gateway.get(f"/api/reviews/{review_id}").json()["status"])
