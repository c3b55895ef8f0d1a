"""Batch signatures in the pure verifier: every record under a certified gateway key.

The ledgers are real (``support/ledger_factory.py``: the gateway's record format, chain and
Ed25519 signatures); each case is what someone with the gateway's database role could write.
"""

from __future__ import annotations

import json
from datetime import timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from support.ledger_factory import T0, Ledger, Signer, build, rewrite

from airflow_hoop.ledger.batch import NOT_SIGNED, key_id, public_raw
from airflow_hoop.ledger.chain import StoredRecord, link_hash
from airflow_hoop.ledger.records import SessionIntent
from airflow_hoop.ledger.verify import FailureKind, Verification, verify_lines


def _verify(ledger: Ledger, batches: list[tuple[int, str]] | None = None) -> Verification:
    return verify_lines(
        ledger.lines(), ledger.signer.keys(), ledger.batches() if batches is None else batches
    )


def _forge(ledger: Ledger, script: str = "DROP TABLE payroll_salaries") -> int:
    """A correctly chained record at the head, as the gateway role can INSERT it."""
    row = ledger.append(
        SessionIntent(session_id="x", connection="warehouse", script=script, script_sha256="0" * 64)
    )
    ledger.rows[-1] = row.model_copy(update={"batch": None})
    return row.seq


def test_a_signed_ledger_verifies() -> None:
    result = _verify(build())
    assert result.ok, result.failure


def test_a_forged_record_before_a_checkpoint_is_named() -> None:
    ledger = build(statements=10)
    seq = _forge(ledger)
    ledger.checkpoint()  # a checkpoint signed over it (the attack)
    result = _verify(ledger)
    assert result.failure is not None
    assert (result.failure.kind, result.failure.seq) == (FailureKind.NOT_SIGNED, seq)
    assert NOT_SIGNED in result.failure.message


def test_a_forged_record_after_the_last_checkpoint_is_named() -> None:
    ledger = build(statements=10)
    seq = _forge(ledger)
    result = _verify(ledger)
    assert result.failure is not None
    assert (result.failure.kind, result.failure.seq) == (FailureKind.NOT_SIGNED, seq)


def test_a_signed_batch_replayed_at_another_place() -> None:
    ledger = build(statements=10)
    victim = next(r for r in ledger.rows if '"session.intent"' in r.body)
    seq = len(ledger.rows) + 1
    data = rewrite(victim.body, seq=seq, prev_hash=ledger.head)
    assert victim.batch is not None
    kid, _first, signature = victim.batch.split(".")
    # The signature moved with the record, its start renumbered to the new place.
    row = StoredRecord(
        seq=seq,
        body=data.decode(),
        hash=link_hash(ledger.head, data),
        batch=f"{kid}.{seq}.{signature}",
    )
    ledger.rows.append(row)
    result = _verify(ledger)
    assert result.failure is not None
    assert (result.failure.kind, result.failure.seq) == (FailureKind.NOT_SIGNED, seq)
    assert "does not verify" in result.failure.message


def test_a_forged_key_certificate_is_refused() -> None:
    ledger = build(statements=5)
    attacker = Signer()  # not Vault's key
    key = Ed25519PrivateKey.generate()
    cert_seq = ledger.append(attacker.certify(key)).seq
    ledger.process_key, ledger.key_id = key, key_id(public_raw(key))
    ledger.statement(ledger.certificate and _step(), 99)
    result = _verify(ledger)
    assert result.failure is not None
    assert (result.failure.kind, result.failure.seq) == (FailureKind.SIGNATURE_INVALID, cert_seq)
    assert "forged key certificate" in result.failure.message


def test_an_expired_key_is_refused() -> None:
    ledger = build(statements=5)
    old = Ed25519PrivateKey.generate()
    # Vault really certified it, for one second long ago: a stolen old process key.
    cert = ledger.signer.certify(old, valid=timedelta(seconds=1))
    ledger.append(cert)
    ledger.process_key, ledger.key_id = old, key_id(public_raw(old))
    seq = len(ledger.rows) + 1
    ledger.statement(_step(), 77)
    result = _verify(ledger)
    assert result.failure is not None
    assert (result.failure.kind, result.failure.seq) == (FailureKind.NOT_SIGNED, seq)
    assert "expired key" in result.failure.message
    assert T0 + timedelta(seconds=seq) > cert.statement.not_after


def test_a_dropped_batch_signature_is_named() -> None:
    ledger = build(statements=10)
    batches = ledger.batches()
    gone = batches.pop(5)
    result = _verify(ledger, batches)
    assert result.failure is not None
    assert (result.failure.kind, result.failure.seq) == (FailureKind.NOT_SIGNED, gone[0])


def test_a_checkpoint_states_its_batches() -> None:
    ledger = build(statements=6, every=4)
    statement = json.loads(ledger.rows[-1].body)["body"]["statement"]
    assert statement["batches"] == statement["last_seq"] - statement["first_seq"] + 1


def _step():  # type: ignore[no-untyped-def]
    from airflow_hoop.ledger.records import StepRef

    return StepRef(dag_id="d", task_id="t", run_id="r")
