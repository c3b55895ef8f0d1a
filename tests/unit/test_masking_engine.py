"""The masking engine and policy configuration, without a stack: rules, methods, errors, record."""

from __future__ import annotations

import hashlib
import hmac
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from airflow_hoop.errors import ConfigError
from airflow_hoop.gateway.masking.engine import ColumnInfo, MaskingEngine
from airflow_hoop.gateway.masking.methods import Hasher, MaskingError, partial
from airflow_hoop.gateway.masking.rules import MaskingPolicy
from airflow_hoop.gateway.masking.stream import StreamMasker
from airflow_hoop.gateway.settings import GatewaySettings

KEY = bytes(range(32))
HASHER = Hasher(KEY, "default v1")


def _policy(**kw: Any) -> MaskingPolicy:
    return MaskingPolicy.model_validate({"name": "p", **kw})


def _mask(policy: MaskingPolicy, columns: list[ColumnInfo], rows: list[tuple[Any, ...]]):
    masker = MaskingEngine(policy, HASHER).start()
    return masker.mask_rows(columns, rows), masker.record()


def _token(value: str, key: bytes = KEY) -> str:
    return "hmac:" + hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:32]


RULES = {
    "columns": [
        {"name": "emails", "columns": ["email", "*_email"], "method": "hash"},
        {"name": "cards", "columns": ["billing.customers.card_number"], "method": "partial"},
        {"name": "notes", "columns": ["secret_*"], "method": "null"},
        {"name": "ssn", "columns": ["ssn"], "method": "redact"},
    ]
}


def test_column_rules_by_name_glob_source_and_table() -> None:
    cols = [
        ColumnInfo("contact", table="customers", schema="public", source="email"),  # an alias
        ColumnInfo("work_email"),  # glob, computed
        ColumnInfo("card_number", table="customers", schema="billing", source="card_number"),
        ColumnInfo("card_number", table="customers", schema="public", source="card_number"),
        ColumnInfo("secret_note"),
        ColumnInfo("SSN"),
    ]
    row = ("a@x.io", "b@y.io", "4111-1111-1111-1111", "4111 1111 1111 1111", "n", "123")
    (out,), record = _mask(_policy(**RULES), cols, [row])
    assert out[0] == _token("a@x.io") and out[1] == _token("b@y.io")
    assert out[2] == "****-****-****-1111"
    # Another schema's card_number is not the rule's column: left to the detectors (none here).
    assert out[3] == "4111 1111 1111 1111"
    assert out[4] is None and out[5] == "***"
    assert record.info_types == {"cards": 1, "emails": 2, "notes": 1, "ssn": 1}
    assert record.columns == {
        "card_number": 1,
        "contact": 1,
        "SSN": 1,
        "secret_note": 1,
        "work_email": 1,
    }
    assert record.hmac_key == "default v1"


def test_a_table_rule_leaves_computed_columns_to_the_detectors() -> None:
    policy = _policy(
        columns=[{"name": "emails", "columns": ["customers.email"], "method": "redact"}],
        detectors=["email"],
    )
    cols = [ColumnInfo("email"), ColumnInfo("email", table="customers", source="email")]
    (out,), record = _mask(policy, cols, [("lower: a@x.io", "a@x.io")])
    assert out == ("lower: <EMAIL_ADDRESS>", "***")
    assert record.info_types == {"email": 1, "emails": 1}


def test_nulls_are_not_counted_and_unchanged_rows_are_not_copied() -> None:
    policy = _policy(**RULES, detectors=["all"])
    rows = [("plain text", None), ("more text", None)]
    out, record = _mask(policy, [ColumnInfo("note"), ColumnInfo("email")], rows)
    assert out is rows
    assert record.total_redact_count == 0 and record.columns == {}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("4111 1111 1111 1111", "**** **** **** 1111"),
        ("378282246310005", "***********0005"),
        ("ab12", "****"),  # fewer than 8 letters and digits: masked whole
        ("DE89 3704 0044 0532 0130 00", "**** **** **** **** **30 00"),
        (
            "jürgen.müller@example.de",
            "******.******@*****le.de",
        ),
    ],
)
def test_partial(value: str, expected: str) -> None:
    out = partial(value)
    assert out == expected
    assert sum(c.isalnum() for c in out) <= 4


def test_hash_is_stable_keyed_and_joinable() -> None:
    policy = _policy(columns=[{"name": "e", "columns": ["email"], "method": "hash"}])
    rows = [("a@x.io",), ("b@x.io",), ("a@x.io",), (12345678901,)]
    out, _ = _mask(policy, [ColumnInfo("email")], rows)
    assert out[0] == out[2] != out[1]
    assert out[3][0] == _token("12345678901")
    other = MaskingEngine(policy, Hasher(b"another key of 32 bytes........", "other v1")).start()
    assert other.mask_rows([ColumnInfo("email")], rows[:1])[0][0] != out[0]
    assert "hash" in repr(HASHER).lower() and KEY.hex() not in repr(HASHER)


def test_json_bytes_and_numbers_are_scanned() -> None:
    policy = _policy(detectors=["email", "payment_card", "us_ssn"])
    doc = {"owner": "a@x.io", "nested": [{"ssn": "SSN 123-45-6789"}], "n": 1, "ok": True}
    row = (doc, b"mail a@x.io", 4111111111111111, Decimal("4111111111111111"), 12.5, 42)
    (out,), record = _mask(policy, [ColumnInfo(f"c{i}") for i in range(6)], [row])
    assert out[0] == {
        "owner": "<EMAIL_ADDRESS>",
        "nested": [{"ssn": "SSN <US_SSN>"}],
        "n": 1,
        "ok": True,
    }
    assert out[1] == b"mail <EMAIL_ADDRESS>"
    assert out[2] == out[3] == "<CREDIT_CARD>"
    assert out[4:] == (12.5, 42)
    assert record.columns == {"c0": 2, "c1": 1, "c2": 1, "c3": 1}


def test_non_ascii_cells_keep_their_text() -> None:
    policy = _policy(detectors=["email"])
    rows = [("Grüße an a@x.io – danke",), ("日本語のテキスト",), ("ok b@y.org",)]
    out, _ = _mask(policy, [ColumnInfo("t")], rows)
    assert [r[0] for r in out] == [
        "Grüße an <EMAIL_ADDRESS> – danke",
        "日本語のテキスト",
        "ok <EMAIL_ADDRESS>",
    ]


def test_best_effort_replaces_a_value_it_cannot_scan_and_counts_it() -> None:
    policy = _policy(detectors=["email"], max_cell_bytes=100)
    rows = [("x" * 50 + " a@x.io",), ("a@x.io " + "y" * 200,)]
    out, record = _mask(policy, [ColumnInfo("t")], rows)
    assert out[0][0].endswith("<EMAIL_ADDRESS>") and out[1][0] == "***"
    assert record.err_count == 1 and record.errors == ["column t: a value larger than 100 bytes"]


def test_strict_mode_refuses_the_whole_result() -> None:
    policy = _policy(detectors=["email"], max_cell_bytes=100, mode="strict")
    masker = MaskingEngine(policy).start()
    with pytest.raises(MaskingError, match=r"\[masking\] masking policy 'p' \(strict\)") as info:
        masker.mask_rows([ColumnInfo("t")], [("a@x.io " + "y" * 200,)])
    assert "a@x.io" not in str(info.value)
    assert masker.record().err_count == 1


def test_record_names_the_policy_and_its_version() -> None:
    a, b = _policy(**RULES), _policy(**RULES)
    assert a.version == b.version and len(a.version) == 64
    changed = _policy(**{**RULES, "mode": "strict"})
    assert changed.version != a.version
    masker = MaskingEngine(a, HASHER).start()
    masker.unmasked_to_task = True
    record = masker.record()
    assert (record.policy, record.version, record.unmasked_to_task) == ("p", a.version, True)


@pytest.mark.timeout(30)
def test_a_pathological_regex_runs_in_linear_time() -> None:
    """``(a+)+$`` backtracks exponentially in Python's re; RE2 has no backtracking."""
    policy = _policy(custom=[{"name": "evil", "regex": "(a+)+$"}])
    text = "a" * 200_000 + "b"
    masker = MaskingEngine(policy).start()
    out = masker.mask_rows([ColumnInfo("t")], [(text,), ("aaaa",)])
    assert out[0][0] == text and out[1][0] == "<EVIL>"


def test_streamed_key_is_withheld_until_its_end_line() -> None:
    stream = StreamMasker(MaskingEngine(_policy(detectors=["private_key"])).start())
    parts = [
        "before\n-----BEGIN PRIVATE KEY-----\n",
        "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n",
        "c2VjcmV0IGJvZHkgbGluZQ==\n",
        "-----END PRIVATE KEY-----\nafter\n",
    ]
    out = "".join(stream.feed(p) for p in parts) + stream.flush()
    assert out == "before\n<PRIVATE_KEY>\nafter\n"


# -- configuration: refused when the settings load, naming the rule --------------------------
def _settings_file(tmp_path: Path, masking: dict[str, Any], kind: str = "postgres") -> Path:
    conn: dict[str, Any] = {"name": "w", "masking": masking, "allowed_dags": ["*"]}
    if kind == "postgres":
        conn.update(database="d", vault_role="r")
    else:
        conn.update(type="custom", command=["/bin/sh"])
    data = {
        "database_dsn": "host=x",
        "vault": {
            "url": "http://127.0.0.1:1",
            "auth": {"token": "t"},
            "identity_issuer": "http://127.0.0.1:1/v1/identity/oidc",
        },
        "connections": [conn],
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("masking", "message"),
    [
        (
            {"custom": [{"name": "order_ref", "regex": "ORD-(\\d+"}]},
            "custom detector 'order_ref': invalid regular expression (missing )",
        ),
        (
            {"custom": [{"name": "lookbehind", "regex": "(?<=id=)\\d+"}]},
            "custom detector 'lookbehind': invalid regular expression",
        ),
        (
            {"custom": [{"name": "anything", "regex": "x*"}]},
            "custom detector 'anything': the regular expression matches the empty text",
        ),
        (
            {"custom": [{"name": "huge", "regex": "((a{100}){100}){100}"}]},
            "custom detector 'huge': invalid regular expression",
        ),
        ({"detectors": ["email", "credit_card"]}, "unknown detector 'credit_card'"),
        (
            {"columns": [{"name": "email", "columns": ["e"]}], "detectors": ["email"]},
            "rule name 'email' is used twice",
        ),
        ({"columns": [{"name": "bad", "columns": ["a.b.c.d"]}]}, "is not [schema.][table.]column"),
    ],
)
def test_invalid_policies_are_refused_at_load(
    tmp_path: Path, masking: dict[str, Any], message: str
) -> None:
    path = _settings_file(tmp_path, {"name": "pii", **masking})
    with pytest.raises(ConfigError) as info:
        GatewaySettings.load(path)
    assert message in str(info.value)
    assert str(info.value).startswith("[configuration] invalid gateway settings")


def test_shell_connections_cannot_hand_unmasked_output_to_the_task(tmp_path: Path) -> None:
    path = _settings_file(tmp_path, {"name": "pii", "allow_unmasked_to_task": True}, kind="custom")
    with pytest.raises(ConfigError, match="allow_unmasked_to_task is not supported on shell"):
        GatewaySettings.load(path)


def test_a_valid_policy_loads(tmp_path: Path) -> None:
    path = _settings_file(tmp_path, {"name": "pii", "detectors": ["all"], **RULES})
    conn = GatewaySettings.load(path).connections[0]
    assert conn.masking is not None and len(conn.masking.detectors) == 17


def test_a_partial_column_equals_partial_of_each_value() -> None:
    """The column fast path (one translate for the whole column) changes nothing."""
    values = ["4111-1111-1111-1111", "ab12", "x", "jürgen.müller@example.de", "12345678"]
    values += ["1234567", "***12345678", "4111 1111 1111 111a", "a-b", "", "ABCDEFGH"]
    policy = _policy(columns=[{"name": "p", "columns": ["v"], "method": "partial"}])
    out, _ = _mask(policy, [ColumnInfo("v")], [(v,) for v in values])
    assert [r[0] for r in out] == [partial(v) for v in values]


def test_a_stream_a_strict_policy_cannot_mask_is_withheld_from_there_on() -> None:
    policy = _policy(detectors=["email"], mode="strict", max_cell_bytes=100)
    stream = StreamMasker(MaskingEngine(policy).start())
    out = (
        stream.feed("ok a@x.io\n") + stream.feed("y" * 300 + " b@x.io\n") + stream.feed("c@x.io\n")
    )
    assert out == "ok <EMAIL_ADDRESS>\n[gateway] output withheld: it could not be masked\n"
    assert stream.failed is not None and "b@x.io" not in stream.failed
