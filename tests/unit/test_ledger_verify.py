"""The full verifier, the append encoding and the bundle, on in-memory ledgers (no stack).

The checkpoints here are signed with a local Ed25519 key; test_tamper.py does the same
against a real ledger signed by Vault's transit key.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
from support.ledger_factory import Ledger, Signer, build, recompute, rewrite

from airflow_hoop.gateway.db.appender import _TIME, PreparedRecord
from airflow_hoop.ledger.anchor import AnchorConflictError, DirectoryAnchor
from airflow_hoop.ledger.canonical import canonical, sha256_hex
from airflow_hoop.ledger.checkpoint import statement_digest
from airflow_hoop.ledger.records import (
    CredentialRevoked,
    LedgerRecord,
    MaskingRecord,
    SessionIntent,
    SessionResult,
    ShellIntent,
    StepRef,
)
from airflow_hoop.ledger.steps import steps_from_records
from airflow_hoop.ledger.verify import FailureKind, LedgerVerifier, verify_lines

STEP = StepRef(dag_id="dé\t", task_id='t"\\', run_id="r\n", map_index=2, triggered_by="ü")


@pytest.mark.parametrize(
    "step,body",
    [
        (STEP, SessionIntent(session_id="s", connection="w", script="SELECT '\u2028é\\'", script_sha256="x")),
        (
            STEP,
            SessionIntent(
                session_id="s",
                connection="sh",
                script="echo $PGUSER",
                script_sha256="x",
                shell=ShellIntent(
                    argv=["/bin/bash"], env_names=["PGUSER"], timeout_seconds=1.5,
                    max_output_bytes=10, limits={"open_files": 9},
                ),
            ),
        ),
        (
            STEP,
            SessionResult(
                session_id="s", connection="w", status="success", exit_code=0,
                output_sha256="y", duration_ms=0.25,
                masking=MaskingRecord(policy="p", version="v", mode="strict"),
            ),
        ),
        (None, CredentialRevoked(connection="c", lease_id="l", db_user="u", reason="expired")),
    ],
)  # fmt: skip
@pytest.mark.parametrize("micro", [0, 123456])
def test_prepared_record_bytes_equal_the_canonical_record(step, body, micro):
    """The appender splices bytes around seq, prev_hash and time: they must be canonical."""
    now = datetime(2026, 11, 23, 1, 2, 3, micro, tzinfo=timezone.utc)
    expected = LedgerRecord(
        seq=7, time=now, prev_hash="ab" * 32, step=step, actor='a"b', body=body
    ).canonical_bytes()
    sealed = PreparedRecord(step, 'a"b', body).seal(7, "ab" * 32, _TIME.dump_json(now))
    assert sealed == expected
    assert canonical(json.loads(sealed)) == sealed


def test_untouched_ledger_verifies_with_every_signature():
    ledger = build(statements=40, every=10)
    result = verify_lines(ledger.lines(), ledger.signer.keys(), ledger.batches())
    assert result.ok, result.summary()
    assert result.checkpoints == len(ledger.checkpoints) >= 8
    assert result.unsigned_tail == 1  # the last checkpoint's own record


def test_a_changed_field_is_named_at_its_seq_without_stored_hashes():
    ledger = build()
    lines = ledger.lines()
    seq = _seq_of(ledger, '"SELECT 4"')
    lines[seq - 1] = lines[seq - 1].replace(b'"SELECT 4"', b'"SELECT 5"')
    result = verify_lines(lines, ledger.signer.keys(), ledger.batches())
    assert result.failure.kind is FailureKind.CONTENT_CHANGED and result.failure.seq == seq


def test_a_changed_prev_hash_is_blamed_on_its_own_record():
    ledger = build()
    lines = ledger.lines()
    lines[9] = rewrite(lines[9].decode(), prev_hash="11" * 32)
    result = verify_lines(lines, ledger.signer.keys(), ledger.batches())
    assert result.failure.kind is FailureKind.CONTENT_CHANGED and result.failure.seq == 10


def _seq_of(ledger: Ledger, text: str) -> int:
    return next(r.seq for r in ledger.rows if text in r.body)


@pytest.mark.parametrize(
    "mutate,kind,seq",
    [
        (lambda ls: ls.__delitem__(6), FailureKind.RECORD_MISSING, 7),
        (lambda ls: ls.insert(5, ls.pop(6)), FailureKind.REORDERED, 6),
        (lambda ls: ls.__delitem__(slice(-3, None)), None, None),
    ],
    ids=["deleted", "swapped", "tail-cut-without-anchor"],
)
def test_missing_and_reordered(mutate, kind, seq):
    ledger = build()
    lines = ledger.lines()
    mutate(lines)
    result = verify_lines(lines, ledger.signer.keys(), ledger.batches())
    if kind is None:  # without an anchor a cut tail cannot be seen: that is the anchor's job
        assert result.ok
    else:
        assert result.failure.kind is kind and result.failure.seq == seq


def test_recomputed_chain_is_caught_by_the_signature_covering_it():
    ledger = build(statements=30, every=10)
    lines = ledger.lines()
    seq = _seq_of(ledger, '"SELECT 13"')
    lines[seq - 1] = lines[seq - 1].replace(b'"SELECT 13"', b'"SELECT 14"')
    lines = recompute(lines, seq - 1)
    result = verify_lines(lines, ledger.signer.keys(), ledger.batches())
    failure = result.failure
    assert failure.kind is FailureKind.SIGNATURE_INVALID
    covering = next(c.statement for c in ledger.checkpoints if c.statement.last_seq >= seq)
    assert covering.first_seq > 1  # the change is not in the first checkpoint's range
    assert failure.seq == covering.first_seq <= seq <= covering.last_seq
    assert "changed and the chain recomputed" in failure.message


def test_a_checkpoint_signed_with_another_key_is_refused():
    ledger = build()
    forged = Ledger(Signer())  # an attacker's key
    statement = ledger.checkpoints[-1].statement.model_copy(update={"number": 99})
    ledger.append(forged.signer.checkpoint(statement))
    result = verify_lines(ledger.lines(), ledger.signer.keys(), ledger.batches())
    assert result.failure.kind is FailureKind.SIGNATURE_INVALID
    assert result.failure.seq == len(ledger.rows)


def test_anchor_catches_a_cut_tail_and_an_edited_entry(tmp_path: Path):
    ledger = build()
    anchor = DirectoryAnchor(tmp_path)
    for checkpoint in ledger.checkpoints:
        anchor.put(checkpoint)
    anchor.put(ledger.checkpoints[0])  # idempotent
    keys = ledger.signer.keys()
    assert verify_lines(
        ledger.lines(), keys, ledger.batches(), anchor=anchor.entries()
    ).anchor_matched == len(ledger.checkpoints)
    cut = ledger.lines()[:-4]
    result = verify_lines(cut, keys, ledger.batches(), anchor=anchor.entries())
    assert result.failure.kind is FailureKind.TAIL_TRUNCATED
    assert result.failure.seq == len(cut) + 1
    with pytest.raises(AnchorConflictError):
        anchor.put(ledger.checkpoints[1].model_copy(update={"key_version": 2}))
    path = tmp_path / "checkpoint-000000000002.json"
    path.chmod(0o644)
    path.write_bytes(path.read_bytes().replace(b'"key_version":1', b'"key_version":3'))
    result = verify_lines(ledger.lines(), keys, ledger.batches(), anchor=anchor.entries())
    assert result.failure.kind is FailureKind.ANCHOR_MISMATCH
    assert result.failure.seq == next(
        r.seq for r in ledger.rows if '"number":2' in r.body and '"checkpoint"' in r.body
    )


def test_stored_hash_mismatch_names_the_record():
    ledger = build()
    verifier = LedgerVerifier(ledger.signer.keys())
    seq = _seq_of(ledger, '"SELECT 2"')
    for row in ledger.rows:
        body = row.body.replace('"SELECT 2"', '"SELECT 3"') if row.seq == seq else row.body
        if verifier.feed(body.encode(), row.hash, row.seq):
            break
    result = verifier.finish()
    assert result.failure.seq == seq and "hash does not match" in result.failure.message


def test_steps_view_ignores_checkpoints():
    ledger = build(statements=4, every=2)
    records = [LedgerRecord.model_validate_json(r.body) for r in ledger.rows]
    assert any(r.body.kind == "checkpoint" for r in records)
    views = steps_from_records(records)
    assert len(views) == 1 and len(views[0].statements) == 4


def test_statement_digest_is_over_the_canonical_statement():
    statement = build(statements=1).checkpoints[0].statement
    expected = sha256_hex(canonical(statement.model_dump(mode="json")))
    assert statement_digest(statement).hex() == expected
