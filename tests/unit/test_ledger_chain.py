"""The hash chain: built from real record models, broken in each way a tamperer would."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from airflow_hoop.ledger.canonical import canonical, sha256_hex
from airflow_hoop.ledger.chain import GENESIS_HASH, StoredRecord, link_hash
from airflow_hoop.ledger.records import LedgerRecord, SessionIntent, StepRef
from airflow_hoop.ledger.verify import verify_chain

STEP = StepRef(dag_id="d", task_id="t", run_id="r")


def _chain(n: int) -> list[StoredRecord]:
    rows, prev = [], GENESIS_HASH
    for seq in range(1, n + 1):
        script = f"SELECT {seq}"
        record = LedgerRecord(
            seq=seq,
            time=datetime(2026, 11, 23, tzinfo=UTC),
            prev_hash=prev,
            step=STEP,
            actor=STEP.key,
            body=SessionIntent(
                session_id=f"s{seq}",
                connection="warehouse",
                script=script,
                script_sha256=sha256_hex(script),
            ),
        )
        body = record.canonical_bytes()
        prev = link_hash(prev, body)
        rows.append(StoredRecord(seq=seq, body=body.decode(), hash=prev))
    return rows


def test_untouched_chain_verifies():
    report = verify_chain(_chain(50))
    assert report.ok and report.records == 50 and report.last_seq == 50


def test_canonical_is_sorted_compact_utf8():
    assert canonical({"b": 1, "a": ["é", None]}) == '{"a":["é",null],"b":1}'.encode()
    with pytest.raises(ValueError):
        canonical({"x": float("nan")})


def test_changed_field_is_named_at_its_seq():
    rows = _chain(10)
    rows[6] = rows[6].model_copy(update={"body": rows[6].body.replace("SELECT 7", "SELECT 8")})
    report = verify_chain(rows)
    assert not report.ok and report.failure.seq == 7 and "content changed" in report.failure.message


def test_deleted_record_is_named():
    rows = _chain(10)
    del rows[4]
    report = verify_chain(rows)
    assert not report.ok and report.failure.seq == 5 and "missing" in report.failure.message


def test_swapped_records_are_caught():
    rows = _chain(10)
    rows[3], rows[4] = rows[4], rows[3]
    report = verify_chain(rows)
    assert not report.ok and report.failure.seq == 4


def test_recomputed_hashes_still_break_the_link_to_the_next_record():
    rows = _chain(5)
    tampered = rows[1].body.replace("SELECT 2", "SELECT 9")
    rows[1] = StoredRecord(seq=2, body=tampered, hash=link_hash(rows[0].hash, tampered.encode()))
    report = verify_chain(rows)
    assert not report.ok and report.failure.seq == 3 and "chain broken" in report.failure.message


def test_non_canonical_body_is_refused():
    rows = _chain(3)
    rows[2] = rows[2].model_copy(update={"body": rows[2].body.replace(",", ", ", 1)})
    report = verify_chain(rows)
    assert not report.ok and report.failure.seq == 3
