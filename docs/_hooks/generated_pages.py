"""MkDocs hook: pages generated from the code at build time, so they cannot drift from it.

- ``gateway-api.md`` + ``openapi.json``: the gateway's OpenAPI, from the app factory
  (``create_app``) with placeholder settings; no server runs, nothing is contacted.
- ``configuration.md``: every gateway setting (``GatewaySettings`` and the models under it)
  and every extra of the ``hoop`` Airflow connection, from the pydantic models.

Registered in mkdocs.yml under ``hooks:``; ``tests/unit/test_docs_site.py`` builds the site.
"""

from __future__ import annotations

import json
import types
import typing
from typing import Any

from mkdocs.structure.files import File, Files
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

API_PAGE = "gateway-api.md"
OPENAPI_FILE = "openapi.json"
CONFIG_PAGE = "configuration.md"


def on_files(files: Files, config: Any) -> Files:
    spec = openapi_spec()
    for path, content in (
        (OPENAPI_FILE, json.dumps(spec, indent=2, sort_keys=True)),
        (API_PAGE, api_markdown(spec)),
        (CONFIG_PAGE, configuration_markdown()),
    ):
        files.append(File.generated(config, path, content=content))
    return files


# -- the gateway API ------------------------------------------------------------------------
def openapi_spec() -> dict[str, Any]:
    """The gateway's OpenAPI document, built from the app factory without starting it."""
    from airflow_hoop.gateway.app import create_app
    from airflow_hoop.gateway.settings import GatewaySettings

    # Placeholders only: the routes do not depend on settings; the lifespan never runs here.
    settings = GatewaySettings(
        database_dsn="host=placeholder",
        vault={
            "url": "http://placeholder:8200",
            "auth": {"method": "token", "token": "placeholder"},
            "identity_issuer": "http://placeholder:8200/v1/identity/oidc",
        },
    )
    return create_app(settings).openapi()


def api_markdown(spec: dict[str, Any]) -> str:
    info = spec["info"]
    out = [
        "# Gateway API",
        "",
        f"*Generated from the gateway's OpenAPI document ({info['title']} {info['version']}) "
        f"when this site was built. The raw document: [openapi.json]({OPENAPI_FILE}).*",
        "",
        "Every route takes `Authorization: Bearer <token>`: a step's Vault identity token, or a "
        "`hpk_` API key (auditor, approver or admin role; see [configuration](configuration.md)). "
        'Errors answer hoop\'s shape `{"message": "[link] what. Fix: ..."}`. Routes under '
        "`/api/airflow-hoop/` are this project's extensions; the others follow hoop.dev's "
        "session and review API ([hoop compatibility](hoop.md)).",
        "",
        "| Method | Path | Summary |",
        "|---|---|---|",
    ]
    operations = [
        (path, method, op) for path, ops in spec["paths"].items() for method, op in ops.items()
    ]
    for path, method, op in operations:
        anchor = _anchor(method, path)
        out.append(f"| {method.upper()} | [`{path}`](#{anchor}) | {_first_line(op)} |")
    for path, method, op in operations:
        out += ["", f"## {method.upper()} `{path}` {{#{_anchor(method, path)}}}", ""]
        description = (op.get("description") or "").strip()
        if description:
            out += [description, ""]
        params = op.get("parameters") or []
        if params:
            out += ["| Parameter | In | Type | Required |", "|---|---|---|---|"]
            for p in params:
                out.append(
                    f"| `{p['name']}` | {p['in']} | {_schema_type(p.get('schema', {}))} | "
                    f"{'yes' if p.get('required') else 'no'} |"
                )
            out.append("")
        body = op.get("requestBody", {}).get("content", {})
        for media, content in body.items():
            out.append(f"Request body ({media}): {_schema_type(content.get('schema', {}))}")
            out.append("")
        out += ["| Status | Answer |", "|---|---|"]
        for status, response in op.get("responses", {}).items():
            schema = response.get("content", {}).get("application/json", {}).get("schema")
            kind = _schema_type(schema) if schema else ""
            out.append(f"| {status} | {response.get('description', '')} {kind} |")
    schemas = spec.get("components", {}).get("schemas", {})
    if schemas:
        out += ["", "## Schemas", ""]
        for name, schema in schemas.items():
            out += [f"### {name} {{#schema-{name.lower()}}}", ""]
            if schema.get("description"):
                out += [_one_paragraph(schema["description"]), ""]
            props = schema.get("properties") or {}
            if props:
                required = set(schema.get("required") or [])
                out += ["| Field | Type | Required | Description |", "|---|---|---|---|"]
                for field, prop in props.items():
                    out.append(
                        f"| `{field}` | {_schema_type(prop)} | "
                        f"{'yes' if field in required else 'no'} | "
                        f"{_cell(prop.get('description', ''))} |"
                    )
                out.append("")
    return "\n".join(out) + "\n"


def _anchor(method: str, path: str) -> str:
    slug = "".join(c if c.isalnum() else "-" for c in path.strip("/")).strip("-")
    return f"{method.lower()}-{slug}".replace("--", "-")


def _first_line(op: dict[str, Any]) -> str:
    text = op.get("summary") or (op.get("description") or "").strip().split("\n")[0]
    return _cell(text)


def _schema_type(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#schema-{name.lower()})"
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " or ".join(_schema_type(s) for s in schema[key])
    if schema.get("type") == "array":
        return f"array of {_schema_type(schema.get('items', {}))}"
    if "enum" in schema:
        return " / ".join(f"`{v}`" for v in schema["enum"])
    if "const" in schema:
        return f"`{schema['const']}`"
    return f"`{schema.get('type', 'any')}`"


# -- configuration ----------------------------------------------------------------------------
def configuration_markdown() -> str:
    from airflow_hoop.gateway.masking.rules import ColumnRule, DetectorRule, MaskingPolicy
    from airflow_hoop.gateway.notification_settings import NotificationSettings, WebhookSettings
    from airflow_hoop.gateway.settings import (
        ApiKey,
        ApprovalRule,
        CheckpointSettings,
        GatewaySettings,
        GatewayVault,
        PostgresConnection,
        ShellConnection,
        ShellLimits,
        TlsSettings,
        VaultAuth,
    )
    from airflow_hoop.stream.http_sink import HttpSink
    from airflow_hoop.stream.settings import StreamSettings
    from airflow_hoop.stream.sinks import FileSink
    from airflow_hoop.stream.syslog_sink import SyslogSink
    from airflow_hoop.task.step_session import HoopConnectionConfig
    from airflow_hoop.task.vault_config import StepVaultConfig

    out = [
        "# Configuration reference",
        "",
        "*Generated from the pydantic models when this site was built: the names, types and "
        "defaults below are the ones the code validates.*",
        "",
        "## The gateway: one settings file plus the environment",
        "",
        "The gateway reads one YAML file (`airflow-hoop gateway serve --config FILE`, or "
        "`$HOOP_GATEWAY_CONFIG`). Every key can be overridden by an environment variable "
        "`HOOP_GATEWAY_<KEY>`, nested keys joined by `__` (`HOOP_GATEWAY_VAULT__URL`, "
        "`HOOP_GATEWAY_DATABASE_DSN`): that is how a deployment passes secrets (the DSN, the "
        "AppRole secret_id) from a secret store instead of the file. Unknown keys are refused; "
        "errors name the key. `airflow-hoop gateway check-config FILE` validates a file "
        "(with the environment) without starting anything and prints what it configures, "
        "never a secret. Deployment examples: [deploy](deploy.md).",
        "",
    ]
    sections: list[tuple[str, type[BaseModel], str]] = [
        ("GatewaySettings", GatewaySettings, "top level of the file"),
        ("tls", TlsSettings, "`tls:`"),
        ("vault", GatewayVault, "`vault:`"),
        ("vault.auth", VaultAuth, "`vault.auth:`"),
        ("checkpoints", CheckpointSettings, "`checkpoints:`"),
        (
            "notifications",
            NotificationSettings,
            "`notifications:` ([approval notifications](notifications.md))",
        ),
        ("notifications.webhook", WebhookSettings, "`notifications.webhook:`"),
        ("api_keys[]", ApiKey, "each entry of `api_keys:`"),
        ("connections[] (postgres)", PostgresConnection, "an entry of `connections:`"),
        ("connections[] (custom: shell)", ShellConnection, "an entry with `type: custom`"),
        ("approvals[]", ApprovalRule, "each entry of a connection's `approvals:`"),
        ("limits", ShellLimits, "a shell connection's `limits:`"),
        ("masking", MaskingPolicy, "a connection's `masking:` ([masking](masking.md))"),
        ("masking.columns[]", ColumnRule, "each column rule of a masking policy"),
        ("masking.detectors[]", DetectorRule, "each detector rule of a masking policy"),
        ("siem_stream", StreamSettings, "`siem_stream:` ([signals](signals.md))"),
        ("siem_stream.sink (file)", FileSink, "`sink: {kind: file, ...}`"),
        ("siem_stream.sink (http)", HttpSink, "`sink: {kind: http, ...}`"),
        ("siem_stream.sink (syslog)", SyslogSink, "`sink: {kind: syslog, ...}`"),
    ]
    for title, model, where in sections:
        out += [f"### {title}", "", f"{where}. {_doc(model)}", "", *_field_table(model), ""]

    out += [
        "## The task side: the `hoop` Airflow connection",
        "",
        "Tasks find the gateway and their Vault login in an Airflow connection of type "
        "`hoop` (default id `hoop_default`): `host` is the gateway URL "
        "(`https://hoop-gateway.internal:8009`); `password` holds the AppRole secret_id, the "
        "Vault token (development) or a hoop.dev `hpk_` key, depending on `auth`. Everything "
        "else is an extra (JSON). `vault_url` is required unless `auth` is `hoop_api_key`. "
        "Target connections (`hoop_postgres`, used by `HoopPostgresHook` and the stock "
        "`SQLExecuteQueryOperator`) name the gateway connection in `schema` and the `hoop` connection in the extra `hoop_conn_id`, as "
        "described in [getting started](getting-started.md).",
        "",
        "### Extras of a `hoop` connection: Vault login",
        "",
        f"{_doc(StepVaultConfig)} The extra `vault_url` sets `url`; `ca_file` (the "
        "gateway's private CA) is Vault's too unless `vault_ca_file` names another; secrets "
        "go in the connection's password, never in extras.",
        "",
        *_field_table(StepVaultConfig, skip={"url", "token", "approle_secret_id"}),
        "",
        "### Extras of a `hoop` connection: the gateway",
        "",
        _doc(HoopConnectionConfig),
        "",
        *_field_table(HoopConnectionConfig, skip={"gateway_url", "vault", "api_key"}),
        "",
        "`auth: hoop_api_key` selects a hoop.dev API key (the password) instead of a Vault "
        "login ([hoop compatibility](hoop.md)).",
        "",
    ]
    return "\n".join(out)


def _field_table(model: type[BaseModel], skip: set[str] = frozenset()) -> list[str]:  # type: ignore[assignment]
    rows = ["| Key | Type | Default | Description |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        rows.append(
            f"| `{name}` | {_cell(_type_name(field.annotation))} | {_default(field)} | "
            f"{_cell(field.description or '')} |"
        )
    return rows


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "**required**"
    if field.default_factory is not None:
        try:
            value = field.default_factory()  # type: ignore[call-arg]
        except TypeError:
            return "(computed)"
    else:
        value = field.default
    if value is PydanticUndefined:
        return "**required**"
    if isinstance(value, BaseModel):
        return "(see its section)"
    return _cell(f"`{json.dumps(value)}`") if value is not None else "none"


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is typing.Literal:
        return " / ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin in (list, tuple, set, frozenset):
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return f"map {_type_name(args[0])} to {_type_name(args[1])}" if args else "map"
    if annotation is type(None):
        return "none"
    return getattr(annotation, "__name__", str(annotation))


def _doc(model: type[BaseModel]) -> str:
    return _one_paragraph(model.__doc__ or "")


def _one_paragraph(text: str) -> str:
    return " ".join(line.strip() for line in text.strip().splitlines() if line.strip())


def _cell(text: str) -> str:
    return _one_paragraph(text).replace("|", "\\|")
