"""Masking end to end: real gateway processes, real Vault (the HMAC key), real Postgres, bash.

Raw values are written into the warehouse with the superuser (never through the gateway, whose
ledger records scripts), then read by steps. Each test searches, byte-wise, every place the
output could have landed: the response, the session row, the ledger table, the gateway logs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import string
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hvac
import psycopg
import pytest
import yaml
from support.gateway_support import StepClient, extra_gateway, session_records, step_client

from airflow_hoop.devstack import vault_setup
from airflow_hoop.devstack.models import StackInfo
from airflow_hoop.devstack.stack import WAREHOUSE_MASKING
from airflow_hoop.gateway.masking.detectors import luhn_ok
from airflow_hoop.gateway.masking.rules import MaskingPolicy
from airflow_hoop.ledger.records import MaskingRecord, SessionResult

TABLE = "masking_customers"
RNG = random.Random()


def _card() -> str:
    body = "4" + "".join(RNG.choice(string.digits) for _ in range(14))
    return next(body + d for d in string.digits if luhn_ok(body + d))


def _grouped(card: str) -> str:
    """One card number in groups of four (a valid number: detectors know it as a card)."""
    return "-".join(card[j : j + 4] for j in range(0, 16, 4))


class Data:
    """The raw rows, and every raw sensitive string in them."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:10]
        self.rows = [
            (
                i,
                f"Customer {i}",
                f"cust{i}-{tag}@example.com",
                _grouped(_card()),
                f"call back at billing{i}-{tag}@example.org, paid with {_card()}",
            )
            for i in range(1, 6)
        ]
        self.raw = [v for row in self.rows for v in row[2:4]]
        self.raw += [w.rstrip(",") for row in self.rows for w in row[4].split() if "@" in w]
        self.raw += [row[4].rsplit(" ", 1)[1] for row in self.rows]

    def leaks(self, blob: bytes | str) -> list[str]:
        data = blob.encode() if isinstance(blob, str) else blob
        return [v for v in self.raw if v.encode() in data]


@pytest.fixture(scope="module")
def data(stack: StackInfo) -> Iterator[Data]:
    rows = Data()
    with psycopg.connect(stack.admin_dsn(stack.warehouse_db), autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
        conn.execute(
            f"CREATE TABLE {TABLE} (id int PRIMARY KEY, name text, email text, "
            "card_number text, note text)"
        )
        conn.execute(f"GRANT SELECT ON {TABLE} TO warehouse_writer")
        with conn.cursor() as cur:
            cur.executemany(f"INSERT INTO {TABLE} VALUES (%s, %s, %s, %s, %s)", rows.rows)
    yield rows


def _hmac_key(stack: StackInfo) -> bytes:
    root = vault_setup.vault_client(stack.bao_addr, stack.bao_root_token)
    try:
        secret = root.secrets.kv.v2.read_secret_version(
            path=f"{vault_setup.MASKING_KEY_PATH}/{vault_setup.MASKING_KEY_NAME}",
            mount_point=vault_setup.MASKING_KV_MOUNT,
            raise_on_deleted_version=True,
        )
    finally:
        root.adapter.close()
    return bytes.fromhex(secret["data"]["data"]["key"])


def _token(key: bytes, value: str) -> str:
    return "hmac:" + hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:32]


def _result(stack: StackInfo, session_id: str) -> SessionResult:
    bodies = [r.body for r in session_records(stack, session_id)]
    result = bodies[-1]
    assert isinstance(result, SessionResult), bodies
    return result


def _stored(stack: StackInfo) -> bytes:
    """The ledger and session tables, every byte, as the gateway database holds them."""
    with psycopg.connect(stack.admin_dsn(stack.gateway_db)) as conn:
        ledger = conn.execute(
            "SELECT coalesce(string_agg(body, E'\\n'), '') FROM ledger"
        ).fetchone()
        sessions = conn.execute(
            "SELECT coalesce(string_agg(s::text, E'\\n'), '') FROM sessions s"
        ).fetchone()
    assert ledger and sessions
    return (ledger[0] + sessions[0]).encode()


def _logs(stack: StackInfo) -> bytes:
    return b"".join(p.read_bytes() for p in Path(stack.run_dir).glob("gateway*.log"))


def test_select_is_masked_in_the_response_the_session_and_the_ledger(
    stack: StackInfo, data: Data, step: StepClient
) -> None:
    response = step.exec(f"SELECT * FROM {TABLE} ORDER BY id")
    assert response.status_code == 200, response.text
    assert data.leaks(response.content) == []
    body = response.json()
    key = _hmac_key(stack)
    rows = body["airflow_hoop"]["rows"]
    for raw, out in zip(data.rows, rows, strict=True):
        assert out[:2] == [raw[0], raw[1]]  # not sensitive: unchanged
        assert out[2] == _token(key, raw[2])  # hash, keyed by the Vault secret: joinable
        assert out[3] == "****-****-****-" + raw[3][-4:]
        assert out[4] == "call back at <EMAIL_ADDRESS>, paid with <CREDIT_CARD>"
    assert f"{rows[0][2]}\t{rows[0][3]}" in body["output"]  # the text output is masked too

    result = _result(stack, body["session_id"])
    assert result.masking == body["airflow_hoop"]["masking"] or result.masking is not None
    masking = result.masking
    assert isinstance(masking, MaskingRecord)
    assert (masking.policy, masking.version) == (
        "warehouse-pii",
        MaskingPolicy.model_validate(WAREHOUSE_MASKING).version,
    )
    n = len(data.rows)
    assert masking.info_types == {
        "card_columns": n,
        "email": n,
        "email_columns": n,
        "payment_card": n,
    }
    assert masking.columns == {"card_number": n, "email": n, "note": 2 * n}
    assert masking.total_redact_count == 4 * n and masking.err_count == 0
    assert masking.hmac_key == "default v1" and not masking.unmasked_to_task

    session = step.get(f"/api/sessions/{body['session_id']}")
    assert session.status_code == 200 and data.leaks(session.content) == []
    assert data.leaks(_stored(stack)) == []
    assert data.leaks(_logs(stack)) == []


def test_aliases_expressions_and_error_messages_are_masked(
    stack: StackInfo, data: Data, step: StepClient
) -> None:
    aliased = step.exec(f"SELECT email AS contact, card_number AS c FROM {TABLE} ORDER BY id")
    assert aliased.status_code == 200, aliased.text
    first = aliased.json()["airflow_hoop"]["rows"][0]
    assert first[0].startswith("hmac:") and first[1].startswith("****-")  # by source column
    computed = step.exec(f"SELECT upper(email) || '' AS e FROM {TABLE} ORDER BY id LIMIT 1")
    assert computed.json()["airflow_hoop"]["rows"] == [["<EMAIL_ADDRESS>"]]  # by the detector
    failing = step.exec(f"SELECT email::int FROM {TABLE} ORDER BY id")
    assert failing.status_code == 200 and failing.json()["exit_code"] == 1
    assert 'invalid input syntax for type integer: "<EMAIL_ADDRESS>"' in failing.json()["output"]
    result = _result(stack, failing.json()["session_id"])
    assert result.error and "<EMAIL_ADDRESS>" in result.error
    for response in (aliased, computed, failing):
        assert data.leaks(response.content) == []
    assert data.leaks(_stored(stack)) == []


def test_a_shell_sibling_cannot_read_the_masked_columns_in_clear(
    stack: StackInfo, data: Data, step: StepClient
) -> None:
    """The bypass of issue #15: ops_shell reaches the warehouse with the step's own user, and
    psql's COPY writes the masked columns as plain text. The settings made ops_shell carry the
    warehouse policy's detectors, so its output is masked as it streams."""
    copy = f"COPY (SELECT email, card_number, note FROM {TABLE} ORDER BY id) TO STDOUT"
    response = step.exec(f'psql -X -v ON_ERROR_STOP=1 -c "{copy}"', connection="ops_shell")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["exit_code"] == 0, body["output"]
    lines = body["output"].splitlines()
    assert len(lines) == len(data.rows), body["output"]
    for line in lines:
        email, card, note = line.split("\t")
        assert email == "<EMAIL_ADDRESS>" and card == "<CREDIT_CARD>", line
        assert note == "call back at <EMAIL_ADDRESS>, paid with <CREDIT_CARD>"
    assert data.leaks(response.content) == []
    session = step.get(f"/api/sessions/{body['session_id']}")
    assert session.status_code == 200 and data.leaks(session.content) == []
    assert data.leaks(_stored(stack)) == []
    masking = _result(stack, body["session_id"]).masking
    assert masking is not None and masking.policy == "ops-shell-pii"


# -- policies on connections of a second gateway ---------------------------------------------
@pytest.fixture(scope="module")
def gateway(stack: StackInfo, data: Data) -> Iterator[str]:
    settings = yaml.safe_load(Path(stack.gateway_settings_path).read_text())
    warehouse = next(c for c in settings["connections"] if c["name"] == "warehouse")
    base = {k: v for k, v in warehouse.items() if k not in ("masking", "approvals")}

    def conn(name: str, **masking: Any) -> dict[str, Any]:
        return {**base, "name": name, "masking": {"name": f"{name}-policy", **masking}}

    connections = [
        conn("wh_strict", mode="strict", detectors=["all"], max_cell_bytes=1000),
        conn("wh_lenient", detectors=["all"], max_cell_bytes=1000),
        conn("wh_unmasked", columns=WAREHOUSE_MASKING["columns"], detectors=["all"],
             allow_unmasked_to_task=True),
        conn("wh_evil", custom=[{"name": "evil", "regex": "(a+)+$"},
                                {"name": "order_ref", "regex": "ORD-[0-9]{6}"}]),
        {"name": "sh_masked", "type": "custom", "allowed_dags": ["test_*"],
         "env": {"LANG": "C.UTF-8"}, "masking": {"name": "shell-pii", "detectors": ["all"]}},
    ]  # fmt: skip
    with extra_gateway(stack, "masking", connections=connections) as url:
        yield url


@pytest.fixture
def other(stack: StackInfo, gateway: str) -> Iterator[StepClient]:
    with step_client(stack, url=gateway) as client:
        yield client


def test_strict_mode_fails_the_command_and_withholds_the_output(
    stack: StackInfo, other: StepClient
) -> None:
    big = other.exec("SELECT 'mail a@b.io', repeat('x', 5000) AS blob", connection="wh_strict")
    assert big.status_code == 200, big.text
    body = big.json()
    assert body["exit_code"] == 1 and body["output_status"] == "failed"
    assert body["output"].startswith("[gateway] masking policy 'wh_strict-policy' (strict)")
    assert "a@b.io" not in big.text and "xxxx" not in big.text
    result = _result(stack, body["session_id"])
    assert result.status == "failed" and result.masking is not None
    assert result.masking.err_count == 1
    assert result.masking.errors == ["column blob: a value larger than 1000 bytes"]


def test_strict_failure_inside_a_transaction_makes_its_commit_fail(other: StepClient) -> None:
    """The statement ran in the step's open transaction: its COMMIT is refused afterwards."""
    assert other.exec("SELECT 1", connection="wh_strict").json()["exit_code"] == 0  # opens it
    failed = other.exec("SELECT repeat('x', 5000) AS blob", connection="wh_strict").json()
    assert failed["exit_code"] == 1
    commit = other.exec("COMMIT", connection="wh_strict").json()
    assert commit["exit_code"] == 1 and "COMMIT refused" in commit["output"]


def test_best_effort_replaces_what_it_cannot_mask_and_says_so(
    stack: StackInfo, other: StepClient
) -> None:
    big = other.exec("SELECT 'mail a@b.io', repeat('x', 5000) AS blob", connection="wh_lenient")
    body = big.json()
    assert body["exit_code"] == 0, body
    assert body["airflow_hoop"]["rows"] == [["mail <EMAIL_ADDRESS>", "***"]]
    masking = _result(stack, body["session_id"]).masking
    assert masking is not None and masking.err_count == 1 and masking.info_types == {"email": 1}


def test_unmasked_to_the_task_only_when_the_policy_allows_and_recorded(
    stack: StackInfo, data: Data, other: StepClient
) -> None:
    response = other.exec(f"SELECT email, note FROM {TABLE} ORDER BY id", connection="wh_unmasked")
    body = response.json()
    assert body["airflow_hoop"]["rows"][0] == [data.rows[0][2], data.rows[0][4]]
    assert data.rows[0][2] in body["output"]
    session = other.get(f"/api/sessions/{body['session_id']}")
    assert data.leaks(session.content) == []
    masking = _result(stack, body["session_id"]).masking
    assert masking is not None and masking.unmasked_to_task
    assert data.leaks(_stored(stack)) == []


@pytest.mark.timeout(120)
def test_a_pathological_regex_cannot_stall_the_gateway(stack: StackInfo, other: StepClient) -> None:
    """``(a+)+$`` on 100 000 a's and a b would backtrack for ages in Python's re."""
    script = "SELECT repeat('a', 100000) || 'b' AS evil, 'ref ORD-123456' AS ref"
    response = other.exec(script, connection="wh_evil")
    assert response.status_code == 200, response.text
    rows = response.json()["airflow_hoop"]["rows"]
    assert rows[0][1] == "ref <ORDER_REF>" and rows[0][0].endswith("ab")
    assert other.exec("SELECT 1", connection="wh_evil").status_code == 200  # still serving


def test_shell_output_is_masked_as_it_streams(stack: StackInfo, other: StepClient) -> None:
    """The raw values are computed by the command, so they are not in its (recorded) script."""
    script = (
        'echo "mail: ops-$((6*7))@example.com"\n'
        "printf 'card %s%s\\n' 41111111 11111111\n"
        "printf -- '-----BEGIN RSA PRIV''ATE KEY-----\\n'; head -c 600 /dev/urandom | base64\n"
        "printf -- '-----END RSA PRIV''ATE KEY-----\\nafter the key\\n'\n"
    )
    response = other.exec(script, connection="sh_masked")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (
        body["output"]
        == "mail: <EMAIL_ADDRESS>\ncard <CREDIT_CARD>\n<PRIVATE_KEY>\nafter the key\n"
    )
    raw = ["ops-42@example.com", "4111111111111111", "BEGIN RSA PRIVATE KEY"]
    assert not [r for r in raw if r.encode() in response.content + _stored(stack) + _logs(stack)]
    masking = _result(stack, body["session_id"]).masking
    assert masking is not None and masking.policy == "shell-pii"
    assert masking.info_types == {"email": 1, "payment_card": 1, "private_key": 1}


def test_without_its_hmac_key_nothing_runs(stack: StackInfo, bao_root: hvac.Client) -> None:
    """The policy hashes with a key Vault does not have: refused before anything ran."""
    settings = yaml.safe_load(Path(stack.gateway_settings_path).read_text())
    warehouse = next(c for c in settings["connections"] if c["name"] == "warehouse")
    masking = {**WAREHOUSE_MASKING, "hmac_key": "no-such-key"}
    conn = {**warehouse, "name": "wh_nokey", "masking": masking}
    with extra_gateway(stack, "nokey", connections=[conn]) as url, step_client(stack, url=url) as s:
        response = s.exec("SELECT 1", connection="wh_nokey")
        assert response.status_code == 503, response.text
        assert (
            "[vault]" in response.json()["message"] and "no-such-key" in response.json()["message"]
        )
        assert "nothing was executed" in response.json()["message"]


@pytest.mark.airflow
def test_airflow_task_logs_and_xcom_see_only_masked_values(
    airflow_home: Any, stack: StackInfo, data: Data
) -> None:
    """A real `airflow dags test`: the operator's XCom and log, a hook's prints."""
    proc = airflow_home.dags_test("test_masking")
    run_id = airflow_home.latest_run("test_masking")
    states = airflow_home.task_states("test_masking", run_id)
    assert set(states.values()) == {"success"}, (states, proc.stdout[-3000:], proc.stderr[-3000:])
    xcoms = airflow_home.xcoms("test_masking", run_id)
    key = _hmac_key(stack)
    assert xcoms["print_customers"] == [_token(key, row[2]) for row in data.rows]
    # The operator's XCom (serialized by Airflow) holds the masked rows.
    masked_note = "call back at <EMAIL_ADDRESS>, paid with <CREDIT_CARD>"
    assert json.dumps(xcoms["read_customers"]).count(masked_note) == len(data.rows)
    logs = airflow_home.task_logs("test_masking")
    assert "customer row:" in logs and "<CREDIT_CARD>" in logs
    assert data.leaks(airflow_home.xcom_text("test_masking", run_id)) == []
    assert data.leaks(logs) == []
    assert data.leaks(_stored(stack)) == []
