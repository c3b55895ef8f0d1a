"""The hook's libpq ``options``: parsed as libpq does, a closed set, refusals that name the option.

The values themselves are checked by PostgreSQL (tests/integration/test_session_settings.py).
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from airflow_hoop.errors import ConfigError
from airflow_hoop.ledger.correlation import APPLICATION_NAME_MAX, application_name, step_digest
from airflow_hoop.wire.session_settings import (
    SESSION_SETTING_NAMES,
    SessionSettings,
    parse_libpq_options,
)
from airflow_hoop.wire.sessions import ExecExtension


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ("-c statement_timeout=3000ms", {"statement_timeout": "3000ms"}),
        ("-cstatement_timeout=5s", {"statement_timeout": "5s"}),
        ("--lock-timeout=1500ms", {"lock_timeout": "1500ms"}),
        (
            "-c statement_timeout=1s   -c idle_in_transaction_session_timeout=60s",
            {"statement_timeout": "1s", "idle_in_transaction_session_timeout": "60s"},
        ),
        ("-c application_name=etl", {"application_name": "etl"}),
        # libpq: a backslash keeps a space inside a value.
        (r"-c search_path=a,\ b", {"search_path": "a, b"}),
        ("-c STATEMENT_TIMEOUT=2s", {"statement_timeout": "2s"}),
    ],
)
def test_libpq_switches_become_typed_settings(options: str, expected: dict[str, str]) -> None:
    settings = parse_libpq_options(options)
    assert settings is not None
    assert dict(settings.items()) == expected


@pytest.mark.parametrize("options", [None, "", "   "])
def test_no_options_no_settings(options: str | None) -> None:
    assert parse_libpq_options(options) is None


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ("-c role=postgres", "role"),
        ("-c session_authorization=postgres", "session_authorization"),
        ("-c default_transaction_read_only=off", "default_transaction_read_only"),
        ("--default-transaction-read-only=off", "default_transaction_read_only"),
        ("-c statement_timeout=1s -c transaction_read_only=off", "transaction_read_only"),
        ("-c work_mem=1GB", "work_mem"),
        ("-B 100", "-B"),
        ("-c", "-c"),
        ("-c statement_timeout", "statement_timeout"),
    ],
)
def test_every_other_option_is_refused_by_name(options: str, named: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_libpq_options(options)
    message = str(exc.value)
    assert named in message
    # The allowed ones are named too, so the author knows what would work.
    assert all(name in message for name in SESSION_SETTING_NAMES)


def test_values_with_control_characters_are_refused() -> None:
    with pytest.raises(ConfigError, match="control characters"):
        parse_libpq_options("-c statement_timeout=1s\\\n")


@pytest.mark.parametrize("prefix", ["a:b", "hoop:0123456789abcdef:x", "a b", "é", "x" * 25, ""])
def test_application_name_prefix_cannot_forge_the_step_mark(prefix: str) -> None:
    with pytest.raises(ValidationError):
        SessionSettings(application_name=prefix)


def test_the_wire_model_is_closed() -> None:
    """A caller that bypasses the hook and posts JSON cannot name another setting."""
    for name in ("role", "session_authorization", "default_transaction_read_only"):
        with pytest.raises(ValidationError):
            ExecExtension.model_validate({"session_settings": {name: "x"}})


@pytest.mark.parametrize("key", ["d/t/r/1", "d" * 200 + "/t/%/1", "é/t/r/1"])
def test_a_prefixed_application_name_keeps_the_step_digest(key: str) -> None:
    name = application_name(key, prefix="x" * 24)
    assert name.startswith("x" * 24 + " hoop:" + step_digest(key) + ":")
    assert len(name.encode()) <= APPLICATION_NAME_MAX
    assert application_name(key).startswith("hoop:" + step_digest(key))
