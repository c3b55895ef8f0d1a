"""The ledger stream's pure parts (docs/signals.md): the OCSF mapping, the chain check, the
durable cursor, the pump's at-least-once contract and the rotating file sink. Ledgers are
built with the ledger's own models and chain (tests/support/ledger_factory.py); the stack
tests are in tests/integration/test_siem_stream.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.ledger_factory import Ledger, build, recompute, rewrite

from airflow_hoop.errors import ChainBrokenError, ConfigError, SinkError
from airflow_hoop.ledger.canonical import canonical, sha256_hex
from airflow_hoop.ledger.chain import link_hash
from airflow_hoop.ledger.records import (
    CredentialIssued,
    CredentialRevoked,
    MaskingRecord,
    PolicyRefused,
    ReviewDecided,
    ReviewExecuted,
    ReviewRequested,
    ReviewStatement,
    ReviewTarget,
    SessionIntent,
    SessionResult,
    StepRef,
)
from airflow_hoop.stream.cursor import Cursor, CursorFile
from airflow_hoop.stream.formats import JsonlFormat, OcsfFormat
from airflow_hoop.stream.ocsf import EVENT
from airflow_hoop.stream.pump import StreamPump, follow
from airflow_hoop.stream.sinks import FileSink

STEP = StepRef(dag_id="d", task_id="t", run_id="r")
SECRET_EMAIL = "alice.secret@example.com"


class Raw(NamedTuple):
    seq: int
    hash: str
    data: bytes


def raws(ledger: Ledger) -> list[Raw]:
    return [Raw(r.seq, r.hash, r.body.encode()) for r in ledger.rows]


def every_kind() -> Ledger:
    """One record of every kind, a masked result among them, and a final checkpoint."""
    ledger = Ledger()
    script = "SELECT email FROM customers"
    review = dict(review_id="rv1", connection="warehouse", command_sha256=sha256_hex("x"))
    ledger.append(
        CredentialIssued(
            connection="warehouse",
            lease_id="db/creds/r/1",
            db_user="u1",
            vault_role="r",
            ttl_seconds=60,
        ),
        STEP,
    )
    ledger.append(
        SessionIntent(
            session_id="s1",
            connection="warehouse",
            script=script,
            script_sha256=sha256_hex(script),
            label="read",
        ),
        STEP,
    )
    ledger.append(
        SessionResult(
            session_id="s1",
            connection="warehouse",
            status="success",
            exit_code=0,
            rows_returned=1,
            output_sha256=sha256_hex("masked output"),
            duration_ms=1.0,
            masking=MaskingRecord(
                policy="warehouse-pii",
                version="v" * 64,
                mode="strict",
                info_types={"email_columns": 1},
                columns={"email": 1},
                total_redact_count=1,
            ),
        ),
        STEP,
    )
    ledger.append(PolicyRefused(connection="secret_db", reason="DAG d is not allowed"), STEP)
    ledger.append(
        ReviewRequested(
            **review,
            session_id="s2",
            target=ReviewTarget(dag_id="d", task_id="t", run_id="r"),
            statements=[ReviewStatement(script="DELETE FROM t", sha256=sha256_hex("DELETE"))],
            groups=["data-owners"],
            min_approvals=1,
            expires_after_seconds=600,
        ),
        STEP,
    )
    ledger.append(
        ReviewDecided(
            **review,
            decision="APPROVED",
            status="APPROVED",
            approver="bob",
            credential="approver-key",
            channel="gateway-api",
        )
    )
    ledger.append(
        ReviewExecuted(
            **review,
            statement_index=0,
            statement_sha256=sha256_hex("DELETE"),
            try_number=1,
            remaining=0,
        ),
        STEP,
    )
    ledger.append(
        SessionResult(
            session_id="s2",
            connection="warehouse",
            status="failed",
            exit_code=1,
            output_sha256=sha256_hex(""),
            duration_ms=1.0,
            sqlstate="25006",
        ),
        STEP,
    )
    ledger.append(
        CredentialRevoked(
            connection="warehouse", lease_id="db/creds/r/1", db_user="u1", reason="step-end"
        ),
        STEP,
    )
    ledger.checkpoint()
    return ledger


def pump_to_file(tmp_path: Path, fmt: Any = None, **sink: Any) -> StreamPump:
    return StreamPump(
        fmt or OcsfFormat(),
        FileSink(path=tmp_path / "out.jsonl", **sink),
        CursorFile(tmp_path / "cursor.json"),
    )


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- OCSF ------------------------------------------------------------------------------------
EXPECTED_CLASS = {
    "credential.issued": (3001, 3, 1),
    "session.intent": (6003, 6, 2),  # a read
    "session.result": (6003, 6, 99),
    "policy.refused": (3003, 3, 1),
    "review.requested": (3003, 3, 99),
    "review.decided": (3003, 3, 1),
    "review.executed": (3003, 3, 99),
    "credential.revoked": (3001, 3, 6),
    "checkpoint": (0, 0, 99),
    "gateway.key": (0, 0, 99),  # a gateway process's batch key certified (the first record)
}


def test_every_record_kind_becomes_a_valid_ocsf_event(tmp_path: Path) -> None:
    ledger = every_kind()
    pump = pump_to_file(tmp_path)
    pump.push(raws(ledger))
    events = lines(tmp_path / "out.jsonl")
    assert len(events) == len(ledger.rows)
    for event, row in zip(events, ledger.rows, strict=True):
        EVENT.validate_python(event)  # the emitted JSON is a valid event of its class
        record = json.loads(row.body)
        kind = record["body"]["kind"]
        assert (event["class_uid"], event["category_uid"], event["activity_id"]) == (
            EXPECTED_CLASS[kind]
        ), kind
        assert event["type_uid"] == event["class_uid"] * 100 + event["activity_id"]
        assert event["metadata"]["product"]["name"] == "airflow-hoop"
        assert event["metadata"]["version"].startswith("1.")
        assert event["metadata"]["uid"] == f"ledger:{row.seq}"
        assert event["severity_id"] == 1
        ext = event["unmapped"]["airflow_hoop"]
        assert (ext["seq"], ext["hash"], ext["prev_hash"]) == (
            row.seq,
            row.hash,
            record["prev_hash"],
        )
        # The record's body as stored: nothing added, nothing dropped.
        assert ext["body"] == record["body"]
    # The final checkpoint covers every record before it.
    checkpoint_seq = ledger.rows[-1].seq
    for event in events[:-1]:
        assert event["unmapped"]["airflow_hoop"]["covering_checkpoint"] == {
            "seq": checkpoint_seq,
            "number": 1,
        }
    assert "covering_checkpoint" not in events[-1]["unmapped"]["airflow_hoop"]


def test_statuses_and_who_decided(tmp_path: Path) -> None:
    pump = pump_to_file(tmp_path)
    pump.push(raws(every_kind()))
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for event in lines(tmp_path / "out.jsonl"):
        by_kind.setdefault(event["metadata"]["event_code"], []).append(event)
    ok, failed = by_kind["session.result"]
    assert (ok["status_id"], failed["status_id"]) == (1, 2)
    assert failed["status_detail"] == "failed (SQLSTATE 25006)"
    refused = by_kind["policy.refused"][0]
    assert (refused["status_id"], refused["status_detail"]) == (2, "DAG d is not allowed")
    decided = by_kind["review.decided"][0]
    assert decided["user"] == {"name": "bob", "uid": "approver-key", "type_id": 1}
    issued = by_kind["credential.issued"][0]
    assert issued["user"]["name"] == "u1" and issued["actor"]["user"]["name"] == STEP.key


def test_a_masked_result_shows_only_counts_and_digests(tmp_path: Path) -> None:
    pump = pump_to_file(tmp_path)
    pump.push(raws(every_kind()))
    text = (tmp_path / "out.jsonl").read_text()
    assert SECRET_EMAIL not in text
    result = next(
        e for e in lines(tmp_path / "out.jsonl") if e["metadata"]["event_code"] == "session.result"
    )
    body = result["unmapped"]["airflow_hoop"]["body"]
    assert body["masking"]["columns"] == {"email": 1}
    assert body["output_sha256"] == sha256_hex("masked output")
    assert set(body) <= set(SessionResult.model_fields)


def test_raw_jsonl_lines_are_the_ledger_stream_lines(tmp_path: Path) -> None:
    ledger = build(statements=5, every=4)
    pump = pump_to_file(tmp_path, fmt=JsonlFormat())
    pump.push(raws(ledger))
    out = (tmp_path / "out.jsonl").read_bytes().splitlines()
    assert out == [
        b'{"seq":%d,"hash":"%s","record":%s}' % (r.seq, r.hash.encode(), r.body.encode())
        for r in ledger.rows
    ]


# -- the chain -------------------------------------------------------------------------------
def test_a_changed_record_is_not_delivered_and_the_stream_names_it(tmp_path: Path) -> None:
    ledger = build(statements=10, every=100)
    records = raws(ledger)
    bad = records[6]
    forged = rewrite(bad.data.decode(), actor="someone-else")
    records[6] = Raw(bad.seq, bad.hash, forged)  # the claimed hash kept: bytes changed
    pump = pump_to_file(tmp_path)
    with pytest.raises(ChainBrokenError) as err:
        pump.push(records)
    assert err.value.seq == 7 and "record 7 was changed" in str(err.value)
    delivered = lines(tmp_path / "out.jsonl")
    assert [e["unmapped"]["airflow_hoop"]["seq"] for e in delivered] == [1, 2, 3, 4, 5, 6]
    assert CursorFile(tmp_path / "cursor.json").load().seq == 6
    assert b"someone-else" not in (tmp_path / "out.jsonl").read_bytes()


def test_a_recomputed_chain_is_caught_at_the_signed_checkpoint(tmp_path: Path) -> None:
    ledger = build(statements=10, every=8)
    data = [r.body.encode() for r in ledger.rows]
    data[2] = rewrite(data[2].decode(), actor="someone-else")
    data = recompute(data, 2)
    records, prev = [], "00" * 32
    for seq, body in enumerate(data, 1):
        prev = link_hash(prev, body)
        records.append(Raw(seq, prev, body))
    first_checkpoint = next(
        r.seq for r in records if json.loads(r.data)["body"]["kind"] == "checkpoint"
    )
    pump = pump_to_file(tmp_path)
    with pytest.raises(ChainBrokenError) as err:
        pump.push(records)
    assert err.value.seq == first_checkpoint
    assert "signed head differs" in str(err.value)


def test_a_gap_is_named(tmp_path: Path) -> None:
    records = raws(build(statements=4, every=100))
    del records[3]
    with pytest.raises(ChainBrokenError) as err:
        pump_to_file(tmp_path).push(records)
    assert err.value.seq == 4 and "missing" in str(err.value)


def test_a_ledger_rewritten_behind_the_cursor_is_detected_on_resume(tmp_path: Path) -> None:
    CursorFile(tmp_path / "cursor.json").save(5, "ab" * 32)  # what was delivered before
    records = raws(build(statements=6, every=100))[5:]
    with pytest.raises(ChainBrokenError) as err:
        pump_to_file(tmp_path).push(records)
    assert err.value.seq == 6 and "the cursor's hash" in str(err.value)
    assert not (tmp_path / "out.jsonl").exists() or (tmp_path / "out.jsonl").read_text() == ""


# -- cursor and at-least-once ------------------------------------------------------------------
def test_the_cursor_is_saved_atomically_and_read_back(tmp_path: Path) -> None:
    cursor_file = CursorFile(tmp_path / "c" / "cursor.json")
    assert cursor_file.load() == Cursor()
    saved = cursor_file.save(42, "cd" * 32)
    assert cursor_file.load() == saved
    assert [p.name for p in (tmp_path / "c").iterdir()] == ["cursor.json"]  # no temp left


def test_a_torn_cursor_file_is_refused_not_reset(tmp_path: Path) -> None:
    (tmp_path / "cursor.json").write_text('{"seq": 4')
    with pytest.raises(ConfigError, match="is not a cursor file"):
        CursorFile(tmp_path / "cursor.json").load()


def test_two_streams_cannot_share_a_cursor(tmp_path: Path) -> None:
    first = pump_to_file(tmp_path)
    with pytest.raises(ConfigError, match="another stream holds the cursor"):
        pump_to_file(tmp_path)
    first.close()
    pump_to_file(tmp_path).close()


class FlakySink:
    """Takes batches until told to fail; a failed batch may have arrived (ack lost)."""

    def __init__(self, fail_on: set[int], arrives: bool) -> None:
        self.calls, self.fail_on, self.arrives = 0, fail_on, arrives
        self.received: list[int] = []

    def deliver(self, lines: list[bytes]) -> None:
        self.calls += 1
        failing = self.calls in self.fail_on
        if not failing or self.arrives:
            self.received += [json.loads(line)["seq"] for line in lines]
        if failing:
            raise SinkError("the test sink failed")

    def close(self) -> None:
        pass


@pytest.mark.parametrize("arrives", [False, True], ids=["lost", "ack-lost"])
def test_a_failed_batch_is_delivered_again_and_nothing_else(tmp_path: Path, arrives: bool) -> None:
    ledger = build(statements=20, every=10)
    sink = FlakySink(fail_on={3}, arrives=arrives)
    cursor = CursorFile(tmp_path / "cursor.json")
    pump = StreamPump(JsonlFormat(), sink, cursor)  # type: ignore[arg-type]

    def read(after: int) -> list[Raw]:
        return [r for r in raws(ledger) if r.seq > after]

    with pytest.raises(SinkError):
        follow(pump, read, batch_size=5, keep_following=False)
    assert cursor.load().seq == 10  # two batches acknowledged
    pump.close()
    follow(StreamPump(JsonlFormat(), sink, cursor), read, batch_size=5, keep_following=False)  # type: ignore[arg-type]
    total = len(ledger.rows)
    expected = list(range(1, total + 1))
    if arrives:  # the unacknowledged batch, twice; nothing else
        expected = [*range(1, 16), *range(11, total + 1)]
    assert sink.received == expected


# -- the rotating file -------------------------------------------------------------------------
def test_the_file_rotates_by_size_and_keeps_k_files(tmp_path: Path) -> None:
    ledger = build(statements=200, every=50)
    pump = pump_to_file(tmp_path, fmt=JsonlFormat(), max_bytes=8192, keep=2)
    follow(
        pump,
        lambda after: [r for r in raws(ledger) if r.seq > after],
        batch_size=10,
        keep_following=False,
    )
    names = sorted(p.name for p in tmp_path.glob("out.jsonl*"))
    assert names == ["out.jsonl", "out.jsonl.1", "out.jsonl.2"]
    kept = [tmp_path / n for n in ("out.jsonl.2", "out.jsonl.1", "out.jsonl")]
    seqs = [json.loads(line)["seq"] for p in kept for line in p.read_text().splitlines()]
    assert all(p.stat().st_size <= 8192 for p in kept)
    # The newest records, contiguous and in order, up to the head.
    assert seqs == list(range(seqs[0], len(ledger.rows) + 1))


# -- settings and the command line ---------------------------------------------------------------
def test_stream_settings_from_a_file_with_options_winning(tmp_path: Path) -> None:
    from airflow_hoop.stream.settings import StreamSettings

    config = tmp_path / "stream.yaml"
    config.write_text(
        "format: jsonl\nsink: {kind: http, url: 'https://siem.example/in', token: t0k3n}\n"
        "cursor_file: /var/lib/c.json\n"
    )
    settings = StreamSettings.load(config, batch_size=50)
    assert settings.format.kind == "jsonl" and settings.batch_size == 50
    assert settings.sink.kind == "http" and "t0k3n" not in repr(settings)
    config.write_text("sink: {kind: ftp}\ncursor_file: c.json\n")
    with pytest.raises(ConfigError, match="invalid stream settings"):
        StreamSettings.load(config)


def test_the_gateway_setting_is_off_by_default_and_validated(tmp_path: Path) -> None:
    from airflow_hoop.gateway.settings import GatewaySettings

    base = {
        "database_dsn": "dbname=x",
        "vault": {
            "url": "http://127.0.0.1:1",
            "auth": {"method": "token", "token": "t"},
            "identity_issuer": "http://127.0.0.1:1/v1/identity/oidc",
        },
    }
    assert GatewaySettings(**base).siem_stream is None
    on = GatewaySettings(
        **base,
        siem_stream={
            "enabled": True,
            "sink": {"kind": "syslog", "transport": "tcp"},
            "cursor_file": str(tmp_path / "c.json"),
        },
    )
    assert on.siem_stream is not None and on.siem_stream.sink.kind == "syslog"
    with pytest.raises(ConfigError, match="siem_stream"):
        bad = tmp_path / "gw.yaml"
        bad.write_text(
            "database_dsn: dbname=x\nvault: {url: 'http://127.0.0.1:1', identity_issuer: x, "
            "auth: {method: token, token: t}}\nsiem_stream: {enabled: true, sink: {kind: file}}\n"
        )
        GatewaySettings.load(bad)


def test_the_command_refuses_options_of_another_sink(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from airflow_hoop.cli.stream import audit_stream

    args = ["--gateway", "http://127.0.0.1:1", "--api-key", "hpk_x"]
    args += ["--cursor", str(tmp_path / "c.json")]
    result = CliRunner().invoke(audit_stream, [*args, "--url", "https://siem.example"])
    assert result.exit_code == 2 and "--url needs --to http" in result.output
    result = CliRunner().invoke(
        audit_stream, ["--gateway", "http://127.0.0.1:1", "--cursor", str(tmp_path / "c.json")]
    )
    assert result.exit_code == 2 and "--api-key" in result.output


def test_a_record_the_mapping_cannot_read_is_delivered_as_a_base_event(tmp_path: Path) -> None:
    ledger = Ledger()
    ledger.append(PolicyRefused(connection="c", reason="r"), STEP)
    row = ledger.rows[0]
    record = json.loads(row.body)
    record["body"] = {"kind": "gateway.key_certified", "key": "k1"}  # a kind added later
    data = json.dumps(record, separators=(",", ":")).encode()
    pump = pump_to_file(tmp_path)
    pump.push([Raw(1, link_hash("00" * 32, data), data)])
    (event,) = lines(tmp_path / "out.jsonl")
    EVENT.validate_python(event)
    assert (event["class_uid"], event["activity_id"]) == (0, 99)
    assert event["unmapped"]["airflow_hoop"]["body"] == {
        "kind": "gateway.key_certified",
        "key": "k1",
    }


def test_an_unreachable_gateway_fails_at_once_even_when_following(tmp_path: Path) -> None:
    import socket

    from click.testing import CliRunner

    from airflow_hoop.cli.stream import audit_stream

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nobody listens there
    args = ["--gateway", f"http://127.0.0.1:{port}", "--api-key", "hpk_x"]
    result = CliRunner().invoke(audit_stream, [*args, "--cursor", str(tmp_path / "c.json")])
    assert result.exit_code == 2, result.output
    assert "[gateway]" in result.output


def test_validated_events_are_the_same_bytes(tmp_path: Path) -> None:
    """Run-time validation (validate_events) checks the events; it changes none of them."""
    plain, checked, records = tmp_path / "plain", tmp_path / "checked", raws(every_kind())
    pump_to_file(plain).push(records)
    pump_to_file(checked, fmt=OcsfFormat(validate_events=True)).push(records)
    assert (plain / "out.jsonl").read_bytes() == (checked / "out.jsonl").read_bytes()


def test_the_http_token_comes_from_the_environment_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from airflow_hoop.cli.stream import _settings, audit_stream

    args = ["--gateway", "http://127.0.0.1:1", "--api-key", "hpk_x"]
    args += ["--cursor", str(tmp_path / "c.json"), "--to", "http", "--url", "https://s.example"]
    result = CliRunner().invoke(audit_stream, [*args, "--token", "t0k3n"])
    assert result.exit_code == 2 and "No such option '--token'" in result.output
    monkeypatch.setenv("HOOP_SIEM_TOKEN", "t0k3n")
    options = {"cursor_file": tmp_path / "c.json", "sink_kind": "http", "url": "https://s.example"}
    settings = _settings(None, options)
    assert settings.sink.token.get_secret_value() == "t0k3n"
    assert "t0k3n" not in repr(settings) and "t0k3n" not in settings.model_dump_json()


_LEDGER_FOR_PROPERTY = build(statements=30, every=7)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    batch_size=st.integers(1, 20),
    fail_on=st.sets(st.integers(1, 40), max_size=6),
    arrives=st.booleans(),
)
def test_at_least_once_in_order_whatever_fails(
    tmp_path_factory: pytest.TempPathFactory, batch_size: int, fail_on: set[int], arrives: bool
) -> None:
    """Any pattern of failed deliveries, each followed by a restart from the cursor: every
    record arrives, first deliveries in order, and a record is repeated only when the batch it
    was in failed after it arrived."""
    tmp = tmp_path_factory.mktemp("prop")
    records = raws(_LEDGER_FOR_PROPERTY)
    sink = FlakySink(fail_on=fail_on, arrives=arrives)
    cursor = CursorFile(tmp / "cursor.json")
    failed_batches: list[list[int]] = []
    for _ in range(len(fail_on) + 1):
        pump = StreamPump(JsonlFormat(), sink, cursor)  # type: ignore[arg-type]
        try:
            follow(pump, lambda after: [r for r in records if r.seq > after],
                   batch_size=batch_size, keep_following=False)  # fmt: skip
            break
        except SinkError:
            failed_batches.append(list(range(pump.seq + 1, pump.seq + 1 + batch_size)))
        finally:
            pump.close()
    assert list(dict.fromkeys(sink.received)) == [r.seq for r in records]
    repeated = {s for s in sink.received if sink.received.count(s) > 1}
    if not arrives:
        assert repeated == set()
    assert repeated <= {s for batch in failed_batches for s in batch}
    assert cursor.load().seq == records[-1].seq


# -- signed only -------------------------------------------------------------------------------
def _chain(data: list[bytes]) -> list[Raw]:
    records, prev = [], "00" * 32
    for seq, body in enumerate(data, 1):
        prev = link_hash(prev, body)
        records.append(Raw(seq, prev, body))
    return records


def _forged_with_checkpoints(ledger: Ledger, changed: int) -> list[Raw]:
    """What a database administrator does: change a record, recompute the chain, and make each
    later checkpoint's head match the new chain (the signature cannot follow)."""
    data = [r.body.encode() for r in ledger.rows]
    data[changed] = rewrite(data[changed].decode(), actor="someone-else")
    prev, hashes = "00" * 32, {}
    for i, line in enumerate(data):
        record = json.loads(line)
        record["prev_hash"] = prev
        if record["body"]["kind"] == "checkpoint":
            statement = record["body"]["statement"]
            statement["head_hash"] = hashes[statement["last_seq"]]
        data[i] = canonical(record)
        prev = link_hash(prev, data[i])
        hashes[i + 1] = prev
    return _chain(data)


def test_a_forged_checkpoint_fails_its_signature(tmp_path: Path) -> None:
    ledger = build(statements=10, every=8)
    records = _forged_with_checkpoints(ledger, 2)
    first_checkpoint = next(r.seq for r in records if b'"kind":"checkpoint"' in r.data)
    # Without the key the forgery is consistent: the stream cannot tell.
    pump_to_file(tmp_path / "blind").push(records)
    # With the pinned key the first checkpoint's signature fails; signed-only, nothing of the
    # forged range was delivered.
    pump = StreamPump(
        OcsfFormat(),
        FileSink(path=tmp_path / "out.jsonl"),
        CursorFile(tmp_path / "cursor.json"),
        keys=ledger.signer.keys(),
        signed_only=True,
    )
    with pytest.raises(ChainBrokenError) as err:
        pump.push(records)
    assert err.value.seq == first_checkpoint and "signature does not verify" in str(err.value)
    assert not (tmp_path / "out.jsonl").exists()
    assert CursorFile(tmp_path / "cursor.json").load().seq == 0


def test_signed_only_holds_records_until_a_verified_checkpoint_covers_them(
    tmp_path: Path,
) -> None:
    ledger = build(statements=10, every=8)
    ledger.statement(STEP, 99)  # two records after the last checkpoint: not yet signed
    records = raws(ledger)
    pump = StreamPump(
        OcsfFormat(),
        FileSink(path=tmp_path / "out.jsonl"),
        CursorFile(tmp_path / "cursor.json"),
        keys=ledger.signer.keys(),
        signed_only=True,
    )
    for one in records:  # one at a time, as a live ledger grows
        pump.push([one])
    events = lines(tmp_path / "out.jsonl")
    last_signed = ledger.checkpoints[-1].statement.last_seq
    assert [e["unmapped"]["airflow_hoop"]["seq"] for e in events] == list(range(1, last_signed + 1))
    assert all(e["unmapped"]["airflow_hoop"]["covering_checkpoint"] for e in events)
    assert pump.seq == last_signed and pump.read_after == len(records)


def test_signed_only_needs_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs the checkpoint public key"):
        StreamPump(
            OcsfFormat(),
            FileSink(path=tmp_path / "o"),
            CursorFile(tmp_path / "c.json"),
            signed_only=True,
        )
