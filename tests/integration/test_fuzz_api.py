"""Bad input, issue #8: fuzz the real gateway process from its own OpenAPI description.

Schemathesis generates requests for every operation in ``/api/openapiv3.json`` (valid ones and,
in negative mode, ones that break the schema), sends them to the session stack's gateway and
checks each answer: never a 5xx, never a dropped connection. Requests go out with one of four
credentials chosen from the case itself (so a run is reproducible): a step's Vault identity
token, an ``hpk_`` auditor key, an ``hpk_`` approver key, or the generated ``authorization``
header as is (mostly garbage: the unauthenticated path). For ``POST /api/sessions`` some bodies
are pointed at a real connection, so the fuzzed scripts reach the database as a dynamic user.

Afterwards, over what the fuzz wrote: every ``session.intent`` has its ``session.result``, every
session row has its intent and is done (no half-written session), and ``audit verify`` passes.
"""

from __future__ import annotations

import time
import zlib
from collections import Counter
from typing import Any

import psycopg
import pytest
import requests
import schemathesis
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode
from support.gateway_support import CONNECTION, StepClient, new_step

from airflow_hoop.cli.audit import audit_verify
from airflow_hoop.devstack.models import StackInfo

#: Per operation and generation mode. Operations whose parameters are all strings have no
#: negative cases (nothing to violate), and some spaces are smaller than this: the total is
#: printed and must reach MIN_REQUESTS.
EXAMPLES_PER_OPERATION = 32
MIN_REQUESTS = 1_000
FUZZ_DAG = "test_fuzz_api"

# hypothesis shrinks a failure to its smallest input; derandomize makes every run the same.
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES_PER_OPERATION,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


class Credentials:
    """The four ways a fuzzed request is sent, picked from the case's own content."""

    def __init__(self, stack: StackInfo, step: StepClient) -> None:
        self.step = step
        keys = (stack.auditor_api_key, stack.approver_api_key, stack.reviewer_api_key)
        self.keys = [k for k in keys if k]
        self.used: Counter[str] = Counter()

    def apply(self, case: Case, pick: int) -> None:
        headers = dict(case.headers or {})
        generated = None
        # Header names are case-insensitive; the generated one may be spelled either way.
        for name in [h for h in headers if h.lower() == "authorization"]:
            generated = headers.pop(name)
        choice = pick % 4
        if choice == 0:
            headers.update(self.step.headers())
            self.used["identity token"] += 1
        elif choice in (1, 2) and self.keys:
            headers["Authorization"] = f"Bearer {self.keys[(pick >> 2) % len(self.keys)]}"
            self.used["hpk_ key"] += 1
        elif generated is not None:
            headers["Authorization"] = generated
            self.used["generated header"] += 1
        else:
            self.used["no header"] += 1
        case.headers = headers


def _pick(case: Case) -> int:
    """A stable number from the generated content (derandomized runs send the same requests)."""
    seen = repr((case.path_parameters, case.query, case.body, case.headers))
    return zlib.crc32(seen.encode("utf-8", "surrogatepass"))


def _aim_at_real_connection(case: Case, pick: int, credentials: Credentials) -> None:
    """Half of the well-formed exec bodies name the real connection and go out as the step,
    so the fuzzed script reaches the database (intent, run, result)."""
    exec_body = case.operation.path == "/api/sessions" and case.method.upper() == "POST"
    if exec_body and isinstance(case.body, dict) and (pick >> 3) % 2 == 0:
        case.body["connection"] = CONNECTION
        case.body.pop("airflow_hoop", None)  # keep it on the SQL path, not cwd/encoding
        assert case.headers is not None
        case.headers.update(credentials.step.headers())


def _gateway_rows(
    stack: StackInfo, after_seq: int, run_id: str
) -> tuple[list[tuple[str, str | None]], Any]:
    with psycopg.connect(stack.admin_dsn(stack.gateway_db), autocommit=True) as conn:
        # The fuzz step's own records (other tests' steps have run ids of their own).
        ledger = conn.execute(
            "SELECT kind, session_id FROM ledger WHERE seq > %s AND run_id = %s ORDER BY seq",
            (after_seq, run_id),
        ).fetchall()
        sessions = conn.execute(
            "SELECT id::text, status, exit_code, output_status FROM sessions WHERE run_id = %s",
            (run_id,),
        ).fetchall()
    return ledger, sessions


def _ledger_head(stack: StackInfo) -> int:
    with psycopg.connect(stack.admin_dsn(stack.gateway_db), autocommit=True) as conn:
        row = conn.execute("SELECT coalesce(max(seq), 0) FROM ledger").fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.timeout(300)
def test_fuzz_gateway_api_from_its_openapi(stack: StackInfo) -> None:
    schema = schemathesis.openapi.from_url(f"{stack.gateway_url}/api/openapiv3.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 19, [op.label for op in operations]
    start_seq = _ledger_head(stack)
    step = StepClient(stack, new_step(dag_id=FUZZ_DAG, task_id="fuzz"))
    credentials = Credentials(stack, step)
    http = requests.Session()
    http.trust_env = False
    sent: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    no_negative: list[str] = []
    try:
        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                strategy = operation.as_strategy(generation_mode=mode)

                @FUZZ_SETTINGS
                @given(case=strategy)
                def fuzz(case: Case) -> None:
                    pick = _pick(case)
                    credentials.apply(case, pick)
                    _aim_at_real_connection(case, pick, credentials)
                    try:
                        response = case.call(base_url=stack.gateway_url, session=http, timeout=60)
                    except requests.ConnectionError as exc:  # a crash drops the connection
                        pytest.fail(f"{case.method} {case.formatted_path}: no answer ({exc})")
                    sent[case.operation.label] += 1
                    statuses[response.status_code] += 1
                    assert response.status_code < 500, (
                        f"{case.method} {case.formatted_path} answered {response.status_code}: "
                        f"{response.text[:300]}\nreproduce: {case.as_curl_command()}"
                    )

                try:
                    fuzz()
                except Unsatisfiable:
                    # Nothing to break: an operation without parameters has no negative cases.
                    assert mode is GenerationMode.NEGATIVE, operation.label
                    no_negative.append(operation.label)
    finally:
        step.close()
        http.close()

    total = sum(sent.values())
    print(f"\nAPI fuzz: {total} requests over {len(sent)} operations; statuses {dict(statuses)}")
    print(f"credentials: {dict(credentials.used)}; no negative cases: {no_negative}")
    assert total >= MIN_REQUESTS
    assert len(sent) == len(operations)
    # The fuzz reached past authentication and input checks, not only 401/422.
    assert statuses[200] > 0 and credentials.used["identity token"] > 0

    ledger, sessions = _settled(stack, start_seq, step.step.run_id)
    intents = {sid for kind, sid in ledger if kind == "session.intent"}
    results = {sid for kind, sid in ledger if kind == "session.result"}
    print(f"ledger: {Counter(kind for kind, _ in ledger)}")
    assert intents, "no fuzzed script reached the database: the fuzz did not go deep enough"
    assert intents == results, f"intent without result: {intents - results}"
    rows = {row[0]: row for row in sessions}
    assert set(rows) == intents, "a session row without its intent, or an intent without row"
    half_written = [row for row in rows.values() if row[1] != "done" or row[3] is None]
    assert not half_written, half_written

    verify = CliRunner().invoke(audit_verify, ["--stack", stack.run_dir])
    assert verify.exit_code == 0, verify.output


def _settled(
    stack: StackInfo, start_seq: int, run_id: str
) -> tuple[list[tuple[str, str | None]], Any]:
    """The fuzz's records once the step has ended (its results and revocation written)."""
    deadline = time.monotonic() + 30
    while True:
        ledger, sessions = _gateway_rows(stack, start_seq, run_id)
        intents = sum(1 for kind, _ in ledger if kind == "session.intent")
        results = sum(1 for kind, _ in ledger if kind == "session.result")
        if intents == results or time.monotonic() > deadline:
            return ledger, sessions
        time.sleep(0.5)
