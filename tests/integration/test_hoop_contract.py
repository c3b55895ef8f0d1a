"""hoop.dev contract: the same client tests against a hoop stand-in and against our gateway.

``hoop.dev`` runs each test against ``tests/support/hoop_contract/recordings/<name>.json``,
served by the replay server, which also checks every request the client sends against hoop's
types (tests/support/hoop_contract/replay.py). ``airflow-hoop`` runs the same test against the
real gateway of the embedded stack, with a step's Vault identity token. Quirks only hoop has
(in-band ``has_review``, agent offline, AI analyzer) run against the stand-in only; docs/hoop.md
lists where our gateway deliberately differs.
"""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr, ValidationError
from support.gateway_support import StepClient, auth_headers, new_step
from support.hoop_contract.psql_outputs import run_psql
from support.hoop_contract.replay import API_KEY, Recording, ReplayServer, recording_names

from airflow_hoop.client.hoop_text import HoopTextError, error_text, parse_psql_output
from airflow_hoop.client.http import GatewayClient
from airflow_hoop.devstack.models import StackInfo
from airflow_hoop.errors import (
    BadRequestError,
    CommandFailedError,
    ConfigError,
    GatewayAuthError,
    PolicyRefusedError,
)
from airflow_hoop.hooks.dbapi import GatewayConnection
from airflow_hoop.ledger.records import StepRef
from airflow_hoop.task.step_session import GovernedStep, HoopConnectionConfig
from airflow_hoop.wire.sessions import ExecExtension, ExecRequest
from airflow_hoop.wire.values import decode_value

# The scripts the recordings were made with (the replay server checks they are sent as is).
SELECT = "SELECT 1 AS n, NULL AS missing, 'a b' AS s, true AS flag, 2.50::numeric AS d;\n"
SCRIPT = (
    "CREATE TEMP TABLE contract_t (id int, v text);\n"
    "INSERT INTO contract_t VALUES (1, 'x'), (2, NULL);\n"
    "UPDATE contract_t SET v = 'y' WHERE id = 2;\n"
    "INSERT INTO contract_t VALUES (3, 'z') RETURNING id, v;\n"
    "SELECT id, v FROM contract_t ORDER BY id;\n"
)
ERROR = "SELECT 1 AS before;\nSELECT * FROM contract_missing_table;\nSELECT 2 AS after;\n"
SLOW = "SELECT pg_sleep(0.6) AS slept, 42 AS answer;\n"
WRITE = "DELETE FROM contract_orders WHERE id = 1;\n"
SID = "5701046a-3c5e-4d7b-9a51-0d1f6f1c2a01"
SID2 = "5701046a-3c5e-4d7b-9a51-0d1f6f1c2a02"
CONNECTION = "warehouse"
REPLAY_STEP = StepRef(
    dag_id="hoop_contract", task_id="load", run_id="manual__2026-08-21T12:00:00+00:00"
)


# -- targets ---------------------------------------------------------------------------------
class Target:
    """One gateway a test talks to: the hoop stand-in (one recording) or our real gateway."""

    def __init__(
        self,
        kind: str,
        url: str,
        token: Callable[[], str],
        step: StepRef,
        live: bool,
        accessor: Callable[[], str | None] | None = None,
    ) -> None:
        self.kind = kind
        self.url = url
        self.token = token
        self.step = step
        self.live = live  # our gateway: sessions must be created before they are read
        self.accessor = accessor
        self.client = GatewayClient(url, token=token, poll_interval=0.05, vault_accessor=accessor)

    @property
    def correlation_id(self) -> str:
        return re.sub(r"[^\x21-\x7e]", "_", self.step.key)[:255]

    def request(self, script: str, **fields: Any) -> ExecRequest:
        return ExecRequest(
            connection=CONNECTION,
            script=script,
            metadata={
                "dag_id": self.step.dag_id,
                "task_id": self.step.task_id,
                "run_id": self.step.run_id,
                "try_number": str(self.step.try_number),
                "map_index": str(self.step.map_index),
            },
            correlation_id=self.correlation_id,
            **fields,
        )

    def raw(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            trust_env=False,
            timeout=30,
            headers={
                **auth_headers(self.token(), self.accessor() if self.accessor else None),
                "User-Client": "contract-test",
            },
        )


Use = Callable[[str], contextlib.AbstractContextManager[Target]]


@contextlib.contextmanager
def replay(name: str, token: str = API_KEY) -> Iterator[Target]:
    """The hoop stand-in serving one recording; fails unless exactly its requests were made."""
    with ReplayServer(Recording.load(name)) as server:
        target = Target("hoop.dev", server.url, lambda: token, REPLAY_STEP, live=False)
        try:
            yield target
        finally:
            target.client.close()
        server.assert_complete()


@pytest.fixture(params=["hoop.dev", "airflow-hoop"])
def target(request: pytest.FixtureRequest) -> Iterator[Use]:
    """``use(recording)``: a context that yields the target for this parametrization."""
    if request.param == "hoop.dev":
        yield replay
        return
    stack: StackInfo = request.getfixturevalue("stack")
    steps: list[StepClient] = []

    @contextlib.contextmanager
    def live(_recording: str) -> Iterator[Target]:
        step = StepClient(stack, new_step("test_hoop_contract", "contract"))
        steps.append(step)
        target = Target(
            "airflow-hoop",
            stack.gateway_url,
            step.token,
            step.step,
            live=True,
            accessor=step.vault.accessor,
        )
        try:
            yield target
        finally:
            target.client.close()

    yield live
    for step in steps:
        step.close()


# -- exec ------------------------------------------------------------------------------------
def test_healthz(target: Use) -> None:
    with target("healthz") as t:
        assert t.client.healthz()


def test_unknown_api_key_is_refused_in_hoops_shape(target: Use) -> None:
    bogus = "hpk_revokedKeyBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"
    with target("auth_denied") as t:
        client = GatewayClient(t.url, token=lambda: bogus)
        with pytest.raises(GatewayAuthError) as caught:
            client.exec(t.request(SELECT))
        client.close()
    # hoop's body says only "access denied": the client names the API key as the fix.
    assert "API key" in str(caught.value)
    assert bogus not in str(caught.value)


def test_exec_returns_psql_text_that_reads_back_into_rows(target: Use) -> None:
    with target("exec_select") as t:
        result = t.client.exec(t.request(SELECT))
    assert (result.output_status, result.exit_code, result.has_review) == ("success", 0, False)
    last = parse_psql_output(result.output, SELECT).last
    assert last is not None
    assert last.columns == ["n", "missing", "s", "flag", "d"]
    assert last.rows == [["1", None, "a b", "t", "2.50"]]
    if t.live:  # our gateway adds the typed rows; the text says the same
        assert result.airflow_hoop is not None
        typed = [[decode_value(v) for v in row] for row in result.airflow_hoop.rows]
        assert typed == [[1, None, "a b", True, Decimal("2.50")]]
    else:
        assert result.airflow_hoop is None


def test_script_of_several_statements_reads_back_statement_by_statement(target: Use) -> None:
    with target("exec_script") as t:
        result = t.client.exec(t.request(SCRIPT))
    assert result.output_status == "success", result.output
    statements = [
        (s.columns, s.rows, s.rowcount, s.status_message)
        for s in parse_psql_output(result.output, SCRIPT).statements
    ]
    assert statements == [
        (None, [], -1, "CREATE TABLE"),
        (None, [], 2, "INSERT 0 2"),
        (None, [], 1, "UPDATE 1"),
        (["id", "v"], [["3", "z"]], 1, "INSERT 0 1"),  # RETURNING: rows, then the tag
        (["id", "v"], [["1", "x"], ["2", "y"], ["3", "z"]], 3, None),
    ]


def test_sql_error_fails_with_psqls_message_and_stops(target: Use) -> None:
    with target("exec_sql_error") as t:
        result = t.client.exec(t.request(ERROR))
    assert result.output_status == "failed" and not result.has_review
    # psql exits 3 on a script error (ON_ERROR_STOP); our gateway says 1 (docs/hoop.md).
    assert result.exit_code == (1 if t.live else 3)
    message = error_text(result.output)
    assert message is not None
    assert message.startswith('ERROR:  relation "contract_missing_table" does not exist')
    parsed = parse_psql_output(result.output, ERROR)
    # psql sends one statement at a time and prints "before" first; our gateway sends the
    # script in one go and Postgres drops the earlier results with the error (docs/hoop.md).
    assert [s.rows for s in parsed.statements] == ([] if t.live else [[["1"]]])
    assert parsed.error is not None


def test_long_run_answers_202_then_polls_and_reads_result_stream(target: Use) -> None:
    with target("exec_202_poll") as t:
        # Our gateway's window is 50 s like hoop's; the extension shortens it for the test.
        extra = {"airflow_hoop": ExecExtension(sync_seconds=0.2)} if t.live else {}
        accepted = t.client.exec(t.request(SLOW, **extra), wait=False)
        assert (accepted.output_status, accepted.exit_code) == ("running", -2)
        assert accepted.output == "" and not accepted.has_review
        seen: list[str] = []
        result = t.client.wait_for(accepted.session_id, on_poll=lambda i: seen.append(i.status))
        chunk = t.client.read_output(accepted.session_id)
    assert seen[0] == "open" and seen[-1] == "done"
    assert (result.output_status, result.exit_code) == ("success", 0)
    last = parse_psql_output(result.output, SLOW).last
    assert last is not None and last.rows == [[None, "42"]]  # pg_sleep returns void: NULL
    assert chunk.text == result.output
    assert chunk.done is (True if t.live else None)  # hoop.dev does not say: poll the session


# -- sessions --------------------------------------------------------------------------------
def test_sessions_are_found_by_correlation_id(target: Use) -> None:
    with target("sessions_by_correlation") as t:
        sid = t.client.exec(t.request(SELECT)).session_id if t.live else SID
        listed = t.client.find_sessions(t.correlation_id)
    assert [s.id for s in listed.data] == [sid]
    assert (listed.total, listed.has_next_page, listed.total_is_capped) == (1, False, False)
    found = listed.data[0]
    assert found.correlation_id == t.correlation_id
    assert found.metadata["dag_id"] == t.step.dag_id and found.metadata["run_id"] == t.step.run_id


def test_session_resource_has_hoops_fields(target: Use) -> None:
    with target("session_get") as t:
        sid = t.client.exec(t.request(SELECT)).session_id if t.live else SID
        info = t.client.get_session(sid)
    assert (info.id, info.status, info.exit_code, info.verb) == (sid, "done", 0, "exec")
    assert info.connection == CONNECTION and info.script is not None
    assert info.script.data == SELECT
    assert info.metadata["task_id"] == t.step.task_id
    assert info.correlation_id == t.correlation_id
    assert info.user and info.user_id
    assert info.end_date is not None and info.end_date >= info.start_date


def test_unknown_session_is_404_not_found(target: Use) -> None:
    with target("session_not_found") as t, t.raw() as http:
        response = http.get(f"/api/sessions/{SID2}")
    assert response.status_code == 404
    assert response.json() == {"message": "not found"}


def test_kill_answers_204(target: Use) -> None:
    with target("session_kill") as t:
        sid = t.client.exec(t.request(SELECT)).session_id if t.live else SID
        t.client.kill(sid)  # raises on anything but 2xx


def test_unknown_connection_is_400_with_hoops_message(target: Use) -> None:
    with target("connection_not_found") as t, t.raw() as http:
        response = http.post("/api/sessions", json={"connection": "nope", "script": SELECT})
    assert response.status_code == 400
    assert response.json() == {"message": "connection nope not found"}


def test_metadata_over_hoops_limit_is_422_and_never_sent_by_the_client(target: Use) -> None:
    too_many = {f"k{i}": "v" for i in range(21)}
    with pytest.raises(ValidationError):
        ExecRequest(connection=CONNECTION, script=SELECT, metadata=too_many)
    body = {"connection": CONNECTION, "metadata": too_many, "script": SELECT}
    with target("metadata_invalid") as t, t.raw() as http:
        response = http.post("/api/sessions", json=body)
    assert response.status_code == 422
    assert set(response.json()) == {"message"}


def test_exec_approved_without_a_review_never_posts_exec(target: Use) -> None:
    with target("review_not_found") as t, pytest.raises(BadRequestError) as caught:
        t.client.exec_approved(SID2 if not t.live else str(uuid.uuid4()))
    assert "404" in str(caught.value)


# -- hoop-only quirks (the stand-in) ---------------------------------------------------------
def test_has_review_means_nothing_ran_and_pending_review_is_not_executed() -> None:
    with replay("exec_has_review") as t:
        result = t.client.exec(t.request(WRITE))
        # hoop: 200, exit_code 0, "success"... and nothing ran. has_review decides.
        assert result.has_review and (result.exit_code, result.output_status) == (0, "success")
        assert result.output.endswith(f"/sessions/{SID}")
        with pytest.raises(PolicyRefusedError) as caught:
            t.client.exec_approved(result.session_id)
    assert "PENDING" in str(caught.value)


def test_approved_review_is_executed_once() -> None:
    with replay("review_approved_exec") as t:
        result = t.client.exec_approved(SID)
    assert (result.output_status, result.exit_code, result.output) == ("success", 0, "DELETE 1\n")


def test_rejected_review_is_not_executed_and_the_reason_is_shown() -> None:
    with replay("review_rejected") as t, pytest.raises(PolicyRefusedError) as caught:
        t.client.exec_approved(SID)
    assert "REJECTED" in str(caught.value) and "month-end close" in str(caught.value)


@pytest.mark.parametrize(
    ("recording", "error"),
    [("review_exec_conflict", BadRequestError), ("review_exec_forbidden", PolicyRefusedError)],
)
def test_exec_of_an_approved_review_is_tried_once(recording: str, error: type[Exception]) -> None:
    # The replay server records any second POST as a problem: hoop gives one attempt.
    with replay(recording) as t, pytest.raises(error):
        t.client.exec_approved(SID)


def test_mandatory_metadata_refusal_names_the_field() -> None:
    with replay("metadata_mandatory") as t, pytest.raises(BadRequestError) as caught:
        t.client.exec(t.request(SELECT))
    assert "missing required metadata field: ticket" in str(caught.value)


# -- the DB-API cursor over hoop.dev ---------------------------------------------------------
def _hoop_dev_step(url: str) -> GovernedStep:
    config = HoopConnectionConfig(gateway_url=url, api_key=SecretStr(API_KEY))
    step = GovernedStep(config, REPLAY_STEP)
    step.client.poll_interval = 0.05
    return step


def test_dbapi_over_hoop_dev_reads_text_rows_and_refuses_parameters() -> None:
    with replay("dbapi_select") as t:
        step = _hoop_dev_step(t.url)
        conn = GatewayConnection(step, CONNECTION)
        cur = conn.cursor()
        with pytest.raises(BadRequestError) as caught:  # refused before anything is sent
            cur.execute("SELECT %s::int", [1])
        assert "cannot bind query parameters" in str(caught.value)
        cur.execute(SELECT)
        assert [d[0] for d in cur.description or []] == ["n", "missing", "s", "flag", "d"]
        assert cur.fetchall() == [("1", None, "a b", "t", "2.50")]
        assert cur.rowcount == 1
        cur.execute(SCRIPT)  # the last statement's rows, as with our gateway
        assert cur.fetchall() == [("1", "x"), ("2", "y"), ("3", "z")]
        conn.commit()  # each hoop session committed on its own: nothing to send
        conn.close()
        step.end()  # no Vault, no step end call on hoop.dev


def test_dbapi_over_hoop_dev_raises_psqls_error() -> None:
    with replay("dbapi_error") as t:
        conn = GatewayConnection(_hoop_dev_step(t.url), CONNECTION)
        with pytest.raises(CommandFailedError) as caught:
            conn.cursor().execute(ERROR)
    message = str(caught.value)
    assert 'relation "contract_missing_table" does not exist' in message
    assert "exit code 3" in message and "(1 row)" not in message


def test_dbapi_refuses_rows_of_a_truncated_output() -> None:
    script = "SELECT g AS n FROM generate_series(1, 50000000) g;\n"
    with replay("dbapi_truncated") as t, pytest.raises(HoopTextError, match="truncated"):
        GatewayConnection(_hoop_dev_step(t.url), CONNECTION).cursor().execute(script)


@pytest.mark.parametrize(
    ("recording", "error", "words"),
    [
        ("exec_agent_offline", CommandFailedError, ["exit code -2", "agent is offline"]),
        ("exec_blocked", PolicyRefusedError, ["blocked", "AI risk analyzer"]),
    ],
)
def test_dbapi_reports_hoops_no_exit_code_and_blocked_answers(
    recording: str, error: type[Exception], words: list[str]
) -> None:
    script = SELECT if recording == "exec_agent_offline" else WRITE
    with replay(recording) as t, pytest.raises(error) as caught:
        GatewayConnection(_hoop_dev_step(t.url), CONNECTION).cursor().execute(script)
    assert all(w in str(caught.value) for w in words)


@pytest.mark.airflow
def test_airflow_task_over_hoop_dev_returns_text_rows_and_refuses_parameters(
    airflow_home: Any,
) -> None:
    """Real Airflow (``dags test``): HoopHook with an API key, the operator, XCom, the listener."""
    from airflow_hoop.devstack import airflow_env

    with ReplayServer(Recording.load("airflow_dag")) as server:
        env = {
            **airflow_home.env,
            "AIRFLOW_CONN_HOOP_DEV": json.dumps(
                {"conn_type": "hoop", "host": server.url, "password": API_KEY,
                 "extra": {"auth": "hoop_api_key"}}
            ),
            "AIRFLOW_CONN_WAREHOUSE_VIA_HOOP_DEV": json.dumps(
                {"conn_type": "hoop_postgres", "schema": CONNECTION,
                 "extra": {"hoop_conn_id": "hoop_dev"}}
            ),
        }  # fmt: skip
        proc = airflow_env.dags_test(env, "test_hoop_dev")
        server.assert_complete()  # one exec; no step end call, nothing for the refused task
    run_id = airflow_home.latest_run("test_hoop_dev")
    states = airflow_home.task_states("test_hoop_dev", run_id)
    output = proc.stdout + proc.stderr
    assert states == {"select": "success", "with_parameters": "failed"}, output[-3000:]
    rows = airflow_home.xcoms("test_hoop_dev", run_id)["select"]
    # Airflow serializes the DB-API tuples as {"__classname__": "builtins.tuple", "__data__": ...}
    assert [r["__data__"] for r in rows] == [["1", None, "a b", "t", "2.50"]]
    assert "cannot bind query parameters" in output
    assert API_KEY not in output
    (sent,) = server.received
    assert sent["metadata"]["dag_id"] == "test_hoop_dev" and sent["metadata"]["run_id"] == run_id
    assert sent["correlation_id"] == f"test_hoop_dev/select/{run_id}/1".replace(" ", "_")
    assert "airflow_hoop" not in sent


# -- configuration ---------------------------------------------------------------------------
def _hook_config(monkeypatch: pytest.MonkeyPatch, conn: dict[str, Any]) -> HoopConnectionConfig:
    from airflow_hoop.hooks.hoop import HoopHook

    monkeypatch.setenv("AIRFLOW_CONN_HOOP_CONTRACT", json.dumps({"conn_type": "hoop", **conn}))
    return HoopHook("hoop_contract").get_config()


def test_hoop_connection_with_an_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    config = _hook_config(
        monkeypatch,
        {
            "host": "https://hoop.example.com",
            "password": API_KEY,
            "extra": {"auth": "hoop_api_key"},
        },
    )
    assert config.hoop_dev and config.vault is None
    assert config.api_key is not None and config.api_key.get_secret_value() == API_KEY
    assert API_KEY not in repr(config)


@pytest.mark.parametrize(
    ("password", "extra", "needle"),
    [
        ("not-a-key", {"auth": "hoop_api_key"}, "not a hoop API key"),
        (None, {"auth": "hoop_api_key"}, "not a hoop API key"),
        (API_KEY, {"auth": "hoop_api_key", "gateway_kind": "airflow-hoop"}, "Vault identity"),
    ],
)
def test_bad_api_key_connections_are_refused_without_echoing_the_key(
    monkeypatch: pytest.MonkeyPatch, password: str | None, extra: dict[str, str], needle: str
) -> None:
    conn: dict[str, Any] = {"host": "https://hoop.example.com", "extra": extra}
    if password:
        conn["password"] = password
    with pytest.raises(ConfigError) as caught:
        _hook_config(monkeypatch, conn)
    assert needle in str(caught.value)
    assert "not-a-key" not in str(caught.value) and API_KEY not in str(caught.value)


# -- the recordings themselves ---------------------------------------------------------------
def test_every_recording_is_used_by_a_test() -> None:
    source = Path(__file__).read_text()
    unused = [n for n in recording_names() if f'"{n}"' not in source]
    assert not unused


def test_recorded_outputs_are_what_psql_prints(stack: StackInfo) -> None:
    """The outputs in the recordings are real: hoop's psql command line prints them today."""
    psql = str(Path(stack.pg_bin) / "psql")
    checked = 0
    for name in recording_names():
        for exchange in Recording.load(name).exchanges:
            if exchange.psql_script is None:
                continue
            output, code = run_psql(
                exchange.psql_script, psql=psql, host=stack.pg_socket_dir, port=stack.pg_port,
                user=stack.pg_superuser, dbname=stack.warehouse_db,
            )  # fmt: skip
            recorded = exchange.response
            if recorded.text is not None:
                assert recorded.text == output, name
            else:
                assert (recorded.json_body["output"], recorded.json_body["exit_code"]) == (
                    output,
                    code,
                ), name
            checked += 1
    assert checked >= 8
