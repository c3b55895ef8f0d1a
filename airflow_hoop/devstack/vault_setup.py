"""Configure a fresh OpenBao dev server for airflow-hoop (hvac, root token, loopback).

What it sets up, in the order a governed step meets it:

1. JWT auth at ``jwt/``: a step proves who it is with a JWT from the identity issuer (claims
   from Airflow's metadata database), verified through the issuer's JWKS (``jwks_url``).
   The "trusted workers" mode has its own mount, ``jwt-trusted-workers/``: a JWT the worker
   signed with the workload key file (claims the worker asserts).
2. Role and policy ``airflow-step``: the login yields a token that may only fetch
3. an OIDC identity token (``identity/oidc/token/airflow-step``, or
   ``airflow-step-trusted-workers``) naming the step and who attests it, which the gateway
   verifies against Vault's JWKS.
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
#: "trusted workers" mode: step JWTs signed by the worker with the workload key.
TRUSTED_JWT_MOUNT = "jwt-trusted-workers"
JWT_ISSUER = "airflow-hoop-devstack"
#: The identity-token role of trusted-workers logins (its template says so).
TRUSTED_IDENTITY_ROLE = "airflow-step-trusted-workers"
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
#: What only the identity issuer attests (read from Airflow's metadata database): never
#: mapped from a trusted worker's JWT, whose identity tokens say ``trusted-workers`` instead.
ISSUER_CLAIMS = ("ti_id", "bundle_name", "bundle_version", "hostname", "attested_by")
ISSUER_ATTESTED = "airflow-issuer"
TRUSTED_ATTESTED = "trusted-workers"

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
_TRUSTED_POLICY = (
    f'path "identity/oidc/token/{TRUSTED_IDENTITY_ROLE}" {{ capabilities = ["read"] }}\n'
)
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
    trusted_jwt_accessor: str
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
    issuer_jwks_url: str,
    issuer: str,
    warehouse_db: str = "warehouse",
) -> VaultSetup:
    """Apply the whole configuration with a root client; returns the gateway's token.

    The identity issuer must already serve its JWKS at ``issuer_jwks_url``: OpenBao fetches
    it when the JWT auth mount is configured.
    """
    key_path = run_dir / WORKLOAD_KEY_FILE
    public_pem = write_workload_key(key_path)
    accessor = setup_jwt_auth(root, issuer_jwks_url, issuer)
    trusted = setup_trusted_workers_auth(root, public_pem)
    identity_issuer = setup_identity_tokens(root, bao_addr, accessor, trusted)
    setup_database(root, pg_port=pg_port, password=bao_admin_password, dbname=warehouse_db)
    setup_transit(root)
    setup_masking_key(root)
    token = create_gateway_token(root)
    return VaultSetup(
        gateway_token=token,
        workload_key_path=key_path,
        jwt_accessor=accessor,
        trusted_jwt_accessor=trusted,
        identity_issuer=identity_issuer,
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


def setup_jwt_auth(root: hvac.Client, jwks_url: str, issuer: str) -> str:
    """JWT auth verifying the identity issuer through its JWKS, the step policy and role.

    The role binds the audience and ``attested_by``, and maps the issuer's claims into the
    entity alias metadata (from there into the identity token). ``bound_claims`` is also where
    a deployment binds the DAG bundles allowed to log in (``bundle_name``): any author can
    name a DAG anything, but not the bundle its code came from. Returns the mount's accessor.
    """
    root.sys.enable_auth_method("jwt", path=JWT_MOUNT)
    root.write_data(
        f"auth/{JWT_MOUNT}/config",
        data={"jwks_url": jwks_url, "bound_issuer": issuer, "jwt_supported_algs": ["EdDSA"]},
    )
    root.sys.create_or_update_policy(STEP_ROLE, _STEP_POLICY)
    root.write_data(
        f"auth/{JWT_MOUNT}/role/{STEP_ROLE}",
        data={
            **_step_role(STEP_ROLE, (*STEP_CLAIMS, *ISSUER_CLAIMS)),
            "bound_claims_type": "glob",
            "bound_claims": {"attested_by": ISSUER_ATTESTED, "bundle_name": "*"},
        },
    )
    return _accessor(root, JWT_MOUNT)


def setup_trusted_workers_auth(root: hvac.Client, public_pem: str) -> str:
    """The "trusted workers" mount: JWTs the worker signs with the workload key. Returns the
    mount's accessor."""
    root.sys.enable_auth_method("jwt", path=TRUSTED_JWT_MOUNT)
    root.write_data(
        f"auth/{TRUSTED_JWT_MOUNT}/config",
        data={"jwt_validation_pubkeys": [public_pem], "bound_issuer": JWT_ISSUER},
    )
    root.sys.create_or_update_policy(TRUSTED_IDENTITY_ROLE, _TRUSTED_POLICY)
    root.write_data(
        f"auth/{TRUSTED_JWT_MOUNT}/role/{STEP_ROLE}",
        data=_step_role(TRUSTED_IDENTITY_ROLE, STEP_CLAIMS),
    )
    return _accessor(root, TRUSTED_JWT_MOUNT)


def _step_role(policy: str, claims: tuple[str, ...]) -> dict[str, object]:
    return {
        "role_type": "jwt",
        "user_claim": "sub",
        "bound_audiences": [JWT_AUDIENCE],
        "claim_mappings": {name: name for name in claims},
        "token_policies": [policy],
        "token_ttl": "15m",
        "token_max_ttl": "1h",
        "token_type": "service",
    }


def _accessor(root: hvac.Client, mount: str) -> str:
    mounts = root.sys.list_auth_methods()
    data = mounts.get("data", mounts)
    return str(data[f"{mount}/"]["accessor"])


def identity_template(
    jwt_accessor: str, claims: tuple[str, ...] = STEP_CLAIMS, attested_by: str | None = None
) -> str:
    """The identity-token claims template: the step fields from the login's alias metadata,
    and, for trusted-workers logins, a fixed ``attested_by`` no worker can change."""
    # Placeholders stay unquoted: OpenBao renders each as a JSON string ("" when absent).
    fields = [
        f'"{name}": {{{{identity.entity.aliases.{jwt_accessor}.metadata.{name}}}}}'
        for name in claims
    ]
    if attested_by:
        fields.append(f'"attested_by": "{attested_by}"')
    return "{" + ", ".join(fields) + "}"


def setup_identity_tokens(
    root: hvac.Client, bao_addr: str, jwt_accessor: str, trusted_accessor: str
) -> str:
    """OIDC identity tokens for steps (EdDSA, audience ``hoop-gateway``): one role per JWT
    mount, each reading its own mount's alias metadata. Returns the issuer."""
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
    templates = {
        STEP_ROLE: identity_template(jwt_accessor, (*STEP_CLAIMS, *ISSUER_CLAIMS)),
        TRUSTED_IDENTITY_ROLE: identity_template(
            trusted_accessor, STEP_CLAIMS, attested_by=TRUSTED_ATTESTED
        ),
    }
    for role, template in templates.items():
        root.write_data(
            f"identity/oidc/role/{role}",
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
