"""airflow-hoop: governed SQL and shell steps for Apache Airflow.

Every step gets its own Vault identity, runs through an access gateway that mints a
short-lived database user, and leaves a tamper-evident ledger record.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def get_provider_info() -> dict[str, Any]:
    """Provider metadata read by Airflow's ProvidersManager (entry point `apache_airflow_provider`)."""
    return {
        "package-name": "airflow-hoop",
        "name": "Hoop gateway",
        "description": __doc__.strip().splitlines()[0] if __doc__ else "airflow-hoop",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Hoop gateway",
                "external-doc-url": "https://hoop.dev",
                "tags": ["protocol"],
            }
        ],
        "hooks": [
            {
                "integration-name": "Hoop gateway",
                "python-modules": ["airflow_hoop.hooks.hoop", "airflow_hoop.hooks.postgres"],
            }
        ],
        "operators": [
            {
                "integration-name": "Hoop gateway",
                "python-modules": [
                    "airflow_hoop.operators.postgres",
                    "airflow_hoop.operators.shell",
                ],
            }
        ],
        "connection-types": [
            {
                "connection-type": "hoop",
                "hook-class-name": "airflow_hoop.hooks.hoop.HoopHook",
                "hook-name": "Hoop gateway",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port", "login"],
                    "relabeling": {"host": "Gateway URL", "password": "Vault secret or API key"},
                    "placeholders": {
                        "host": "https://hoop-gateway.internal:8009",
                        "password": "AppRole secret_id, Vault token or hoop hpk_ API key",
                    },
                },
                "conn-fields": {
                    "vault_url": {
                        "label": "Vault URL",
                        "description": "Vault/OpenBao address the task logs in to as the step.",
                        "schema": {"type": ["string", "null"]},
                    },
                    "auth": {
                        "label": "Vault auth method",
                        "description": "jwt (recommended), approle or token; hoop_api_key for a "
                        "hoop.dev gateway (the hpk_ key in the password field, no Vault).",
                        "schema": {
                            "type": "string",
                            "enum": ["jwt", "approle", "token", "hoop_api_key"],
                            "default": "jwt",
                        },
                    },
                    "gateway_kind": {
                        "label": "Gateway kind",
                        "description": "airflow-hoop (typed rows, parameters, ledger) or hoop.dev "
                        "(text rows only); default: hoop.dev with an API key, else airflow-hoop.",
                        "schema": {
                            "type": ["string", "null"],
                            "enum": ["airflow-hoop", "hoop.dev", None],
                        },
                    },
                    "jwt_role": {
                        "label": "JWT auth role",
                        "schema": {"type": ["string", "null"], "default": "airflow-step"},
                    },
                    "identity": {
                        "label": "Step identity",
                        "description": "airflow_issuer (default): the identity issuer signs claims "
                        "it reads from Airflow's metadata database; trusted_workers: the worker "
                        "signs its own claims (any DAG author can claim any step).",
                        "schema": {
                            "type": ["string", "null"],
                            "enum": ["airflow_issuer", "trusted_workers", None],
                            "default": "airflow_issuer",
                        },
                    },
                    "issuer_url": {
                        "label": "Identity issuer URL",
                        "description": "<api-server>/hoop/issuer, or the standalone issuer.",
                        "schema": {"type": ["string", "null"]},
                    },
                    "workload_key_path": {
                        "label": "Workload issuer key (PEM path), trusted workers only",
                        "description": "Private key that signs the step's JWT for Vault JWT auth "
                        "in the trusted_workers mode.",
                        "schema": {"type": ["string", "null"]},
                    },
                    "identity_role": {
                        "label": "Vault identity token role",
                        "schema": {"type": ["string", "null"], "default": "airflow-step"},
                    },
                    "approle_role_id": {
                        "label": "AppRole role_id",
                        "schema": {"type": ["string", "null"]},
                    },
                },
            },
            {
                "connection-type": "hoop_postgres",
                "hook-class-name": "airflow_hoop.hooks.postgres.HoopPostgresHook",
                "hook-name": "Postgres via Hoop gateway",
                "ui-field-behaviour": {
                    "hidden-fields": ["host", "port", "login", "password"],
                    "relabeling": {"schema": "Gateway connection"},
                    "placeholders": {"schema": "warehouse"},
                },
                "conn-fields": {
                    "hoop_conn_id": {
                        "label": "Hoop connection id",
                        "description": "The 'hoop' connection that names the gateway and Vault.",
                        "schema": {"type": ["string", "null"], "default": "hoop_default"},
                    },
                },
            },
        ],
    }
