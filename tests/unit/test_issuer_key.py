"""The issuer's key file and the commitment rule (no servers needed)."""

from __future__ import annotations

import os
from pathlib import Path

import jwt
import pytest

from airflow_hoop.errors import ConfigError
from airflow_hoop.ledger.records import StepRef
from airflow_hoop.plugins.issuer.keys import load_key, write_key
from airflow_hoop.plugins.issuer.settings import IssuerSettings
from airflow_hoop.wire.identity import commitment, new_step_secret


def test_a_new_key_is_private_and_loads(tmp_path: Path) -> None:
    path = tmp_path / "issuer.pem"
    jwk = write_key(path)
    assert path.stat().st_mode & 0o777 == 0o600
    key = load_key(path)
    assert key.jwk == jwk and "d" not in jwk and jwk["kid"] == key.kid
    token = jwt.encode({"sub": "x"}, key.private, algorithm="EdDSA")
    assert jwt.decode(token, jwt.PyJWK(jwk).key, algorithms=["EdDSA"]) == {"sub": "x"}


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644])
def test_a_key_others_may_read_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "issuer.pem"
    write_key(path)
    os.chmod(path, mode)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_key(path)


def test_a_missing_key_names_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="openssl genpkey"):
        load_key(tmp_path / "absent.pem")


def test_tokens_live_at_most_five_minutes() -> None:
    with pytest.raises(ValueError):
        IssuerSettings(key_path="k", issuer="i", ttl_seconds=301)


def test_a_commitment_binds_the_try_and_hides_the_secret() -> None:
    secret = new_step_secret()
    one = commitment("0193a1b2-0000-7000-8000-000000000001", secret)
    assert one == commitment("0193a1b2-0000-7000-8000-000000000001", secret)
    assert one != commitment("0193a1b2-0000-7000-8000-000000000002", secret)  # another try
    assert one != commitment("0193a1b2-0000-7000-8000-000000000001", new_step_secret())
    assert secret not in one and len(one) == 64


def test_provenance_names_the_bundle_or_the_mode() -> None:
    base = {"dag_id": "d", "task_id": "t", "run_id": "r"}
    attested = StepRef(**base, attested_by="airflow-issuer", bundle_name="b", bundle_version="v")
    assert attested.provenance.startswith("ran code from bundle b at version v")
    assert "trusted workers" in StepRef(**base, attested_by="trusted-workers").provenance
    assert "not attested" in StepRef(**base).provenance
    # Records written before the issuer existed serialise exactly as before.
    assert set(StepRef(**base).model_dump(exclude_none=False)) >= {"dag_id"}
    assert "ti_id" not in StepRef(**base).model_dump()
