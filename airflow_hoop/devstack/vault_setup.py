"""Configure a fresh OpenBao dev server for airflow-hoop (hvac, root token, loopback).

What it sets up, in the order a governed step meets it:

1. JWT auth at ``jwt/``: a step proves who it is with a JWT signed by the workload-issuer key.
2. Role and policy ``airflow-step``: the login yields a token that may only fetch
3. an OIDC identity token (``identity/oidc/token/airflow-step``) naming the step, which the
   gateway verifies against Vault's JWKS.
4. Database engine: the gateway (never the task) mints a per-step Postgres user through a
   child token whose display name is the step key, so the user name shows dag and task.
   Two roles: ``warehouse-rw`` (the writer) and ``warehouse-ro`` (the READ user: SELECT and
   USAGE only, through ``warehouse_reader``).
5. Transit key ``ledger-checkpoint``: the gateway signs ledger checkpoints with it.
6. The gateway's own orphan token, limited to minting step tokens, revoking leases and signing
   (and reading the masking HMAC key, a KV v2 secret under ``secret/airflow-hoop/masking/``).
"""

from __future__ import annotations

import base64
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import hvac
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from airflow_hoop.devstack.database_setup import BAO_ADMIN, WAREHOUSE_READER, WAREHOUSE_WRITER

JWT_MOUNT = "jwt"
JWT_ISSUER = "airflow-hoop-devstack"
JWT_AUDIENCE = "openbao"
STEP_ROLE = "airflow-step"
IDENTITY_AUDIENCE = "hoop-gateway"
DATABASE_MOUNT = "database"
DATABASE_CONFIG = "warehouse"
DATABASE_ROLE = "warehouse-rw"
#: The READ user's role: unapproved commands under a ``required_for: writes`` rule.
DATABASE_READ_ROLE = "warehouse-ro"
TRANSIT_MOUNT = "transit"
CHECKPOINT_KEY = "ledger-checkpoint"
GATEWAY_POLICY = "hoop-gateway"
#: KV v2 secret ``<mount>/<path>/<name>`` with field ``key``: keys the masking ``hash`` method.
MASKING_KV_MOUNT = "secret"
MASKING_KEY_PATH = "airflow-hoop/masking"
MASKING_KEY_NAME = "default"
STEP_CREDS_POLICY = "hoop-step-creds"
WORKLOAD_KEY_FILE = "workload-issuer.pem"

#: Step claims copied into token and entity-alias metadata, and from there into the identity
#: token. ``triggered_by`` is optional: absent claims are skipped and render as "".
STEP_CLAIMS = ("dag_id", "task_id", "run_id", "try_number", "map_index", "triggered_by")

#: Child tokens get display name ``token-<step key>`` with every character outside
#: [A-Za-z0-9-] turned into "-" (so ``governed_etl/load/manual__…/1`` becomes
#: ``token-governed-etl-load-manual--…-1``). The template strips that prefix (only as a prefix:
#: ``and`` short-circuits, so ``slice`` never sees a short name), keeps the first 44
#: characters plus an 8-hex hash of the rest, and adds 6 random characters: at most 62
#: characters, under Postgres's 63.
USERNAME_TEMPLATE = (
    "{{- $d := .DisplayName -}}"
    '{{- if and (gt (len $d) 6) (eq (slice $d 0 6) "token-") }}{{ $d = slice $d 6 }}{{ end -}}'
    '{{- printf "af_%s_%s" ($d | truncate_sha256 52) (random 6) | lowercase -}}'
)

_STEP_POLICY = f'path "identity/oidc/token/{STEP_ROLE}" {{ capabilities = ["read"] }}\n'
_GATEWAY_POLICY = f"""\
path "auth/token/create" {{ capabilities = ["update"] }}
path "sys/leases/revoke" {{ capabilities = ["update"] }}
path "sys/leases/revoke/*" {{ capabilities = ["update"] }}
path "auth/token/lookup-accessor" {{ capabilities = ["update"] }}
path "{TRANSIT_MOUNT}/sign/{CHECKPOINT_KEY}" {{ capabilities = ["update"] }}
path "{TRANSIT_MOUNT}/keys/{CHECKPOINT_KEY}" {{ capabilities = ["read"] }}
path "{MASKING_KV_MOUNT}/data/{MASKING_KEY_PATH}/*" {{ capabilities = ["read"] }}
"""
_STEP_CREDS_POLICY = (
    f'path "{DATABASE_MOUNT}/creds/{DATABASE_CONFIG}-*" {{ capabilities = ["read"] }}\n'
)


@dataclass(frozen=True)
class VaultSetup:
    """What the rest of the stack needs from the configured server. Holds a secret token."""

    gateway_token: str
    workload_key_path: Path
    jwt_accessor: str
    identity_issuer: str


def vault_client(addr: str, token: str | None = None) -> hvac.Client:
    """An hvac client that ignores proxy settings from the environment (loopback only)."""
    session = requests.Session()
    session.trust_env = False
    return hvac.Client(url=addr, token=token, session=session, timeout=10)  # type: ignore[arg-type]


def configure(
    root: hvac.Client,
    *,
    run_dir: Path,
    bao_addr: str,
    pg_port: int,
    bao_admin_password: str,
    warehouse_db: str = "warehouse",
) -> VaultSetup:
    """Apply the whole configuration with a root client; returns the gateway's token."""
    key_path = run_dir / WORKLOAD_KEY_FILE
    public_pem = write_workload_key(key_path)
    accessor = setup_jwt_auth(root, public_pem)
    issuer = setup_identity_tokens(root, bao_addr, accessor)
    setup_database(root, pg_port=pg_port, password=bao_admin_password, dbname=warehouse_db)
    setup_transit(root)
    setup_masking_key(root)
    token = create_gateway_token(root)
    return VaultSetup(
        gateway_token=token,
        workload_key_path=key_path,
        jwt_accessor=accessor,
        identity_issuer=issuer,
    )


def write_workload_key(path: Path) -> str:
    """New Ed25519 workload-issuer key: private PEM to ``path`` (0600); return the public PEM."""
    key = ed25519.Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Created 0600 from the start: no window in which the key is world-readable.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private_pem)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def setup_jwt_auth(root: hvac.Client, public_pem: str) -> str:
    """JWT auth, the step policy and the step role. Returns the jwt mount's accessor."""
    root.sys.enable_auth_method("jwt", path=JWT_MOUNT)
    root.write_data(
        f"auth/{JWT_MOUNT}/config",
        data={"jwt_validation_pubkeys": [public_pem], "bound_issuer": JWT_ISSUER},
    )
    root.sys.create_or_update_policy(STEP_ROLE, _STEP_POLICY)
    root.write_data(
        f"auth/{JWT_MOUNT}/role/{STEP_ROLE}",
        data={
            "role_type": "jwt",
            "user_claim": "sub",
            "bound_audiences": [JWT_AUDIENCE],
            "claim_mappings": {name: name for name in STEP_CLAIMS},
            "token_policies": [STEP_ROLE],
            "token_ttl": "15m",
            "token_max_ttl": "1h",
            "token_type": "service",
        },
    )
    mounts = root.sys.list_auth_methods()
    data = mounts.get("data", mounts)
    return str(data[f"{JWT_MOUNT}/"]["accessor"])


def identity_template(jwt_accessor: str) -> str:
    """The identity-token claims template: the step fields from the login's alias metadata."""
    # Placeholders stay unquoted: OpenBao renders each as a JSON string ("" when absent).
    fields = ", ".join(
        f'"{name}": {{{{identity.entity.aliases.{jwt_accessor}.metadata.{name}}}}}'
        for name in STEP_CLAIMS
    )
    return "{" + fields + "}"


def setup_identity_tokens(root: hvac.Client, bao_addr: str, jwt_accessor: str) -> str:
    """OIDC identity tokens for steps (EdDSA, audience ``hoop-gateway``). Returns the issuer."""
    root.write_data("identity/oidc/config", data={"issuer": bao_addr})
    root.write_data(
        f"identity/oidc/key/{STEP_ROLE}",
        data={
            "algorithm": "EdDSA",
            "allowed_client_ids": [IDENTITY_AUDIENCE],
            "rotation_period": "24h",
            "verification_ttl": "24h",
        },
    )
    template = identity_template(jwt_accessor)
    root.write_data(
        f"identity/oidc/role/{STEP_ROLE}",
        data={
            "key": STEP_ROLE,
            "ttl": "5m",
            "client_id": IDENTITY_AUDIENCE,
            "template": base64.b64encode(template.encode()).decode(),
        },
    )
    return f"{bao_addr}/v1/identity/oidc"


def setup_database(root: hvac.Client, *, pg_port: int, password: str, dbname: str) -> None:
    """Database engine, the warehouse connection and its roles ``warehouse-rw``/``-ro``."""
    root.sys.enable_secrets_engine("database", path=DATABASE_MOUNT)
    root.write_data(
        f"{DATABASE_MOUNT}/config/{DATABASE_CONFIG}",
        data={
            "plugin_name": "postgresql-database-plugin",
            "connection_url": (
                "postgresql://{{username}}:{{password}}"
                f"@127.0.0.1:{pg_port}/{dbname}?sslmode=disable"
            ),
            "username": BAO_ADMIN,
            "password": password,
            "allowed_roles": [f"{DATABASE_CONFIG}-*"],
            "verify_connection": True,
            "username_template": USERNAME_TEMPLATE,
        },
    )
    for role, group, extra in (
        (DATABASE_ROLE, WAREHOUSE_WRITER, []),
        # The READ user: its group has SELECT/USAGE only, and every transaction it starts
        # defaults to read-only (the gateway opens read-only ones itself anyway).
        (
            DATABASE_READ_ROLE,
            WAREHOUSE_READER,
            ['ALTER ROLE "{{name}}" SET default_transaction_read_only TO on;'],
        ),
    ):
        root.write_data(
            f"{DATABASE_MOUNT}/roles/{role}",
            data={
                "db_name": DATABASE_CONFIG,
                "default_ttl": "15m",
                "max_ttl": "1h",
                "creation_statements": [*_creation_statements(group), *extra],
                "revocation_statements": _REVOCATION_STATEMENTS,
            },
        )


def _creation_statements(group: str) -> list[str]:
    """A step user acting as ``group``; no CREATEROLE, CREATEDB or predefined server roles."""
    return [
        # NOINHERIT: the user's rights come only from acting as the group, which the role
        # setting makes the session default. A user that resets its role can therefore
        # create nothing of its own, and DROP ROLE on revoke cannot fail on objects it owns.
        'CREATE ROLE "{{name}}" WITH LOGIN NOINHERIT NOCREATEROLE NOCREATEDB '
        "PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
        f'GRANT "{group}" TO "{{{{name}}}}";',
        f"ALTER ROLE \"{{{{name}}}}\" SET role TO '{group}';",
    ]


_REVOCATION_STATEMENTS = [
    # With a timeout pg_terminate_backend waits until the session has gone, so its temporary
    # objects are dropped before the role is.
    "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE usename = '{{name}}';",
    'DROP ROLE IF EXISTS "{{name}}";',
]


def setup_transit(root: hvac.Client) -> None:
    """Transit engine and the Ed25519 key that signs ledger checkpoints."""
    root.sys.enable_secrets_engine("transit", path=TRANSIT_MOUNT)
    root.write_data(f"{TRANSIT_MOUNT}/keys/{CHECKPOINT_KEY}", data={"type": "ed25519"})


def setup_masking_key(root: hvac.Client) -> None:
    """A random HMAC key for masking's ``hash`` method (the dev server mounts KV v2 at secret/)."""
    root.secrets.kv.v2.create_or_update_secret(
        path=f"{MASKING_KEY_PATH}/{MASKING_KEY_NAME}",
        secret={"key": secrets.token_hex(32)},
        mount_point=MASKING_KV_MOUNT,
    )


def create_gateway_token(root: hvac.Client) -> str:
    """The gateway's policies and its own orphan token: the gateway never sees the root token."""
    root.sys.create_or_update_policy(GATEWAY_POLICY, _GATEWAY_POLICY)
    root.sys.create_or_update_policy(STEP_CREDS_POLICY, _STEP_CREDS_POLICY)
    resp = root.write_data(
        "auth/token/create-orphan",
        data={
            "policies": [GATEWAY_POLICY, STEP_CREDS_POLICY],
            "ttl": "768h",
            "renewable": True,
            "display_name": "hoop-gateway",
        },
    )
    return str(resp["auth"]["client_token"])
