#!/usr/bin/env bash
# Vault / OpenBao configuration for a production airflow-hoop deployment (run once, as an
# administrator; `bao` and `vault` take the same commands). The embedded stack applies the
# same configuration in airflow_hoop/devstack/vault_setup.py, which the test suite runs; the
# policy files next to this script are checked against it (tests/unit/test_deploy_manifests.py).
#
# Inputs (environment):
#   K8S_HOST            the Kubernetes API server URL, seen from Vault
#   WORKLOAD_PUBLIC_PEM file with the workload issuer's public key (steps sign their JWT with
#                       its private key; see docs/deploy.md#kubernetes-executor)
#   WAREHOUSE_URL       postgresql://{{username}}:{{password}}@warehouse-db:5432/warehouse?sslmode=verify-full
#   WAREHOUSE_ADMIN / WAREHOUSE_ADMIN_PASSWORD   the role Vault creates step users with
#   VAULT_ADDR_PUBLIC   Vault's address as the gateway reaches it (identity token issuer)
set -euo pipefail
CLI=${CLI:-bao}
here=$(cd "$(dirname "$0")" && pwd)

# -- the gateway logs in with its pod's service-account token (no root token, no secret) ----
$CLI auth enable kubernetes || true
$CLI write auth/kubernetes/config kubernetes_host="$K8S_HOST"
$CLI policy write hoop-gateway "$here/hoop-gateway.hcl"
$CLI policy write hoop-step-creds "$here/hoop-step-creds.hcl"
$CLI write auth/kubernetes/role/hoop-gateway \
  bound_service_account_names=hoop-gateway bound_service_account_namespaces=hoop-gateway \
  audience=vault token_policies=hoop-gateway,hoop-step-creds token_ttl=1h token_max_ttl=24h

# -- steps log in as themselves (JWT auth; claims are the step) -------------------------------
$CLI auth enable jwt || true
$CLI write auth/jwt/config jwt_validation_pubkeys=@"$WORKLOAD_PUBLIC_PEM" bound_issuer=airflow-hoop
$CLI policy write airflow-step "$here/airflow-step.hcl"
$CLI write auth/jwt/role/airflow-step - <<JSON
{"role_type": "jwt", "user_claim": "sub", "bound_audiences": ["openbao"],
 "claim_mappings": {"dag_id": "dag_id", "task_id": "task_id", "run_id": "run_id",
                    "try_number": "try_number", "map_index": "map_index",
                    "triggered_by": "triggered_by"},
 "token_policies": ["airflow-step"], "token_ttl": "15m", "token_max_ttl": "1h",
 "token_type": "service"}
JSON

# -- identity tokens naming the step (the gateway's bearer; verified with Vault's JWKS) -------
accessor=$($CLI auth list -format=json | python3 -c 'import json,sys; print(json.load(sys.stdin)["jwt/"]["accessor"])')
$CLI write identity/oidc/config issuer="$VAULT_ADDR_PUBLIC"
$CLI write identity/oidc/key/airflow-step algorithm=EdDSA allowed_client_ids=hoop-gateway \
  rotation_period=24h verification_ttl=24h
template=$(python3 - "$accessor" <<'PY'
import sys
a = sys.argv[1]
names = ["dag_id", "task_id", "run_id", "try_number", "map_index", "triggered_by"]
print("{" + ", ".join(f'"{n}": {{{{identity.entity.aliases.{a}.metadata.{n}}}}}' for n in names) + "}")
PY
)
$CLI write identity/oidc/role/airflow-step key=airflow-step ttl=5m client_id=hoop-gateway \
  template="$(printf '%s' "$template" | base64 -w0)"

# -- per-step database users -------------------------------------------------------------------
$CLI secrets enable database || true
$CLI write database/config/warehouse plugin_name=postgresql-database-plugin \
  connection_url="$WAREHOUSE_URL" username="$WAREHOUSE_ADMIN" password="$WAREHOUSE_ADMIN_PASSWORD" \
  allowed_roles='warehouse-*' \
  username_template='{{- $d := .DisplayName -}}{{- if and (gt (len $d) 6) (eq (slice $d 0 6) "token-") }}{{ $d = slice $d 6 }}{{ end -}}{{- printf "af_%s_%s" ($d | truncate_sha256 52) (random 6) | lowercase -}}'
# The writer (approved commands) and the READ user (every unapproved command under a
# `required_for: writes` rule; the gateway's vault_read_role). In the warehouse, as its owner:
#   CREATE ROLE warehouse_reader NOLOGIN; GRANT warehouse_reader TO <WAREHOUSE_ADMIN> WITH ADMIN OPTION;
#   GRANT USAGE ON SCHEMA public TO warehouse_reader;
#   GRANT SELECT ON ALL TABLES IN SCHEMA public TO warehouse_reader;
#   ALTER DEFAULT PRIVILEGES FOR ROLE warehouse_writer IN SCHEMA public GRANT SELECT ON TABLES TO warehouse_reader;
# Neither group may be a member of pg_execute_server_program, pg_read_server_files or
# pg_write_server_files (docs/security.md).
revoke_stmts="SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE usename = '{{name}}'; DROP ROLE IF EXISTS \"{{name}}\";"
$CLI write database/roles/warehouse-rw db_name=warehouse default_ttl=15m max_ttl=1h \
  creation_statements="CREATE ROLE \"{{name}}\" WITH LOGIN NOINHERIT NOCREATEROLE NOCREATEDB PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'; GRANT \"warehouse_writer\" TO \"{{name}}\"; ALTER ROLE \"{{name}}\" SET role TO 'warehouse_writer';" \
  revocation_statements="$revoke_stmts"
$CLI write database/roles/warehouse-ro db_name=warehouse default_ttl=15m max_ttl=1h \
  creation_statements="CREATE ROLE \"{{name}}\" WITH LOGIN NOINHERIT NOCREATEROLE NOCREATEDB PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'; GRANT \"warehouse_reader\" TO \"{{name}}\"; ALTER ROLE \"{{name}}\" SET role TO 'warehouse_reader'; ALTER ROLE \"{{name}}\" SET default_transaction_read_only TO on;" \
  revocation_statements="$revoke_stmts"

# -- the checkpoint key (never exportable) and the masking HMAC keys ---------------------------
$CLI secrets enable transit || true
$CLI write -f transit/keys/ledger-checkpoint type=ed25519
$CLI secrets enable -path=secret kv-v2 || true
$CLI kv put secret/airflow-hoop/masking/default key="$(openssl rand -hex 32)"

# -- Kubernetes executor: task pods log in with their service-account token, and Vault's
#    transit engine signs the step's JWT (no key file on workers; docs/deploy.md) ------------
$CLI write -f transit/keys/airflow-workload type=ed25519
$CLI policy write airflow-workload-signer - <<'HCL'
path "transit/sign/airflow-workload" { capabilities = ["update"] }
HCL
$CLI write auth/kubernetes/role/airflow-task \
  bound_service_account_names=airflow-task bound_service_account_namespaces=airflow \
  audience=vault token_policies=airflow-workload-signer token_ttl=2m token_max_ttl=5m
# Trust the transit key's public key(s) next to the workload issuer's: the JWT role above
# accepts step JWTs signed either way.
transit_pems=$($CLI read -format=json transit/keys/airflow-workload | python3 -c '
import base64, json, sys
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
keys = json.load(sys.stdin)["data"]["keys"]
pems = [ed25519.Ed25519PublicKey.from_public_bytes(base64.b64decode(k["public_key"])).public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    for _, k in sorted(keys.items(), key=lambda kv: int(kv[0]))]
print(json.dumps(pems))')
python3 - "$WORKLOAD_PUBLIC_PEM" "$transit_pems" <<'PY' > /tmp/jwt-config.json
import json, sys
print(json.dumps({"jwt_validation_pubkeys": [open(sys.argv[1]).read()] + json.loads(sys.argv[2]),
                  "bound_issuer": "airflow-hoop"}))
PY
$CLI write auth/jwt/config @/tmp/jwt-config.json && rm /tmp/jwt-config.json
