"""The React plugin bundle in a real Airflow (api-server, scheduler) and Debian's Chromium:
Approvals (who may not decide sees why, inline reason check, a decision shows at once), the
Access audit tab and search (partial DAG match, row link to the task's logs), the home-page
widget, in light and dark mode; screenshots into docs/images.

The run is ``test_approval_flow`` triggered by admin: admin may not approve it (separation of
duties), vic (viewer) may not decide at all, alice approves it in the React view.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import psycopg
import pytest
from support.approval_fixtures import pending_review

from airflow_hoop.devstack.airflow_services import AirflowServices
from airflow_hoop.devstack.models import StackInfo

pytestmark = pytest.mark.airflow

FLOW = "test_approval_flow"
IMAGES = Path(__file__).parents[2] / "docs" / "images"
TABLE = f"ui_react_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def flow(airflow_services: AirflowServices, stack: StackInfo) -> dict[str, Any]:
    # The approved load writes this table: it must exist, owned by the role the gateway uses.
    with psycopg.connect(stack.admin_dsn(stack.warehouse_db), autocommit=True) as conn:
        conn.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (id int PRIMARY KEY, note text)")
        conn.execute(f"ALTER TABLE {TABLE} OWNER TO warehouse_writer")
    run_id = airflow_services.trigger(FLOW, {"table": TABLE, "why": "nightly load"})
    airflow_services.wait_state(FLOW, run_id, "approve_load", {"deferred"}, timeout=120)
    return {"run_id": run_id, "review": pending_review(stack, run_id)}


def _api(af: AirflowServices, user: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {af.token(user)}"} if user else {}
    return httpx.Client(base_url=af.url, headers=headers, trust_env=False, timeout=30)


def _ti_api(run_id: str) -> str:
    return f"/hoop/ui/api/approvals/{FLOW}/{quote(run_id, safe='')}/load?map_index=-1"


def test_bundle_is_served_and_registered(airflow_services):
    with _api(airflow_services, "alice") as api:
        bundle = api.get("/hoop/ui/static/hoop-ui.js")
        assert bundle.status_code == 200
        assert bundle.headers["content-type"].startswith("text/javascript")
        assert api.get("/hoop/ui/static/..%2Fapp.py").status_code == 404
        plugins = api.get("/api/v2/plugins").json()["plugins"]
    apps = next(p for p in plugins if p["name"] == "airflow_hoop")["react_apps"]
    routes = {a["url_route"]: a for a in apps}
    assert routes["hoop-access-audit-ti"]["name"] == "Access audit"
    assert routes["hoop-dashboard"]["destination"] == "dashboard"
    assert all(a["icon"].endswith(".svg") for a in apps)


def test_json_endpoints_need_a_user(airflow_services, flow):
    with _api(airflow_services, None) as api:
        for path in ("/hoop/ui/api/summary", "/hoop/ui/api/approvals", _ti_api(flow["run_id"])):
            assert api.get(path).status_code == 401, path


def test_who_may_not_decide_is_told_why(airflow_services, flow):
    with _api(airflow_services, "admin") as api:
        (view,) = [
            v
            for v in api.get(_ti_api(flow["run_id"])).json()
            if v["review"]["id"] == flow["review"].id
        ]
    assert not view["can_decide"]
    assert "triggered this run" in view["why_not"]
    with _api(airflow_services, "alice") as api:
        (view,) = [
            v
            for v in api.get(_ti_api(flow["run_id"])).json()
            if v["review"]["id"] == flow["review"].id
        ]
    assert view["can_decide"] and view["why_not"] is None


def test_reject_without_reason_and_wrong_dag_are_refused(airflow_services, flow):
    review = flow["review"]
    body = {
        "decision": "REJECTED",
        "reason": "  ",
        "command_sha256": review.airflow_hoop.command_sha256,
    }
    with _api(airflow_services, "alice") as api:
        empty = api.post(f"/hoop/ui/api/decide/{FLOW}/{review.id}", json=body)
        assert empty.status_code == 400
        assert "reason" in empty.json()["detail"]["what"]
        body["reason"] = "no"
        # Permission is checked on the path's DAG: the review must belong to it.
        wrong = api.post(f"/hoop/ui/api/decide/test_approval_self/{review.id}", json=body)
        assert wrong.status_code == 404
    with _api(airflow_services, "vic") as api:
        assert api.post(f"/hoop/ui/api/decide/{FLOW}/{review.id}", json=body).status_code == 403


def test_search_matches_part_of_a_dag_id(airflow_services):
    with _api(airflow_services, "alice") as api:
        found = api.get("/hoop/ui/api/search", params={"dag_id": "approval_fl"}).json()
        star = api.get("/hoop/ui/api/search", params={"dag_id": "test_*_flow"}).json()
        none = api.get("/hoop/ui/api/search", params={"dag_id": "no_such_dag"}).json()
    assert found["matched_dags"] == [FLOW] and star["matched_dags"] == [FLOW]
    assert none["matched_dags"] == [] and none["rows"] == []


# -- in the browser -------------------------------------------------------------------------------
def _page(browser: Any, af: AirflowServices, user: str, scheme: str = "light") -> Any:
    context = browser.new_context(viewport={"width": 1400, "height": 900}, color_scheme=scheme)
    context.add_cookies([{"name": "_token", "value": af.token(user), "url": af.url}])
    return context.new_page()


def _shot(page: Any, name: str, scheme: str) -> None:
    IMAGES.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(IMAGES / f"{name}-{scheme}.png"))


def test_browser_approval_flow(browser, airflow_services, flow):
    review = flow["review"]
    ti = f"{airflow_services.url}/dags/{FLOW}/runs/{quote(flow['run_id'], safe='')}/tasks/load"
    admin = _page(browser, airflow_services, "admin")
    admin.goto(f"{ti}/plugin/hoop-approvals-ti")
    card = admin.locator(f"[data-review='{review.id}']")
    card.wait_for(timeout=30_000)
    assert "triggered this run" in card.get_by_test_id("hoop-why-not").inner_text()
    assert card.get_by_test_id("hoop-approve").count() == 0

    alice = _page(browser, airflow_services, "alice")
    alice.goto(f"{airflow_services.url}/plugin/hoop-approvals")
    card = alice.locator(f"[data-review='{review.id}']")
    card.wait_for(timeout=30_000)
    _shot(alice, "approvals-page", "light")
    card.get_by_test_id("hoop-reject").click()
    assert "Say why" in card.get_by_test_id("hoop-reason-error").inner_text()
    card.locator("textarea[name=reason]").fill("checked the target table")
    card.get_by_test_id("hoop-approve").click()
    card.locator(".hoop-decision").wait_for(timeout=30_000)
    assert "APPROVED" in card.inner_text() and "alice" in card.locator(".approver").inner_text()
    airflow_services.wait_state(FLOW, flow["run_id"], "load", {"success"}, timeout=180)


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_browser_access_audit_views(browser, airflow_services, flow, scheme):
    airflow_services.wait_state(FLOW, flow["run_id"], "load", {"success"}, timeout=240)
    page = _page(browser, airflow_services, "alice", scheme)
    run = quote(flow["run_id"], safe="")
    page.goto(f"{airflow_services.url}/dags/{FLOW}/runs/{run}/tasks/load")
    # The tab (the nav entry has the same name: pick the tab by its route)
    tab = page.locator("a[href$='plugin/hoop-access-audit-ti']").first
    tab.wait_for(timeout=30_000)
    assert tab.inner_text().strip() == "Access audit"
    tab.click()
    page.get_by_test_id("hoop-commands").wait_for(timeout=30_000)
    assert TABLE in page.get_by_test_id("hoop-commands").inner_text()
    assert page.locator("iframe").count() == 0  # in-page, not an external view
    _shot(page, "access-audit-tab", scheme)

    page.goto(f"{airflow_services.url}/plugin/hoop-access-audit?dag_id=approval_fl")
    page.get_by_test_id("hoop-results").wait_for(timeout=30_000)
    assert "matched 1 DAG" in page.get_by_test_id("hoop-count").inner_text()
    _shot(page, "access-audit-search", scheme)
    # A row's task is a router link to that try's logs: the URL changes, no reload.
    page.get_by_test_id("hoop-row-logs").first.click()
    page.wait_for_url(f"**/dags/{FLOW}/runs/**/tasks/**", timeout=30_000)
    assert "/plugin/" not in page.url

    page.goto(f"{airflow_services.url}/")
    page.get_by_test_id("hoop-dashboard").wait_for(timeout=30_000)
    assert "approvals waiting" in page.get_by_test_id("hoop-pending-count").inner_text()
    _shot(page, "home-widget", scheme)
