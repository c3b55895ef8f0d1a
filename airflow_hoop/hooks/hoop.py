"""HoopHook: the ``hoop`` connection (gateway URL + how a step logs in to Vault)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow.sdk import BaseHook
from pydantic import SecretStr, ValidationError

from airflow_hoop.defaults import DEFAULT_HOOP_CONN_ID
from airflow_hoop.errors import ConfigError, IdentityError
from airflow_hoop.hooks import commit
from airflow_hoop.task.identity import StepIdentity
from airflow_hoop.task.step_session import GovernedStep, HoopConnectionConfig, step_for
from airflow_hoop.task.vault_config import StepVaultConfig

# Hooks used in any task commit through the supervisor when no hoop operator did.
commit.install()

#: ``auth`` extra of a 'hoop' connection that holds a hoop.dev API key instead of a Vault login.
HOOP_API_KEY_AUTH = "hoop_api_key"


class HoopHook(BaseHook):
    """Reads a ``hoop`` connection and gives the current task its governed step.

    Connection fields: ``host`` is the gateway URL (``https://gateway:8009``); ``password``
    holds the AppRole secret_id or the Vault token when ``auth`` is ``approle``/``token``.
    Extras: ``vault_url``, ``auth`` (``jwt``, the default, ``approle`` or ``token``),
    ``identity`` (``airflow_issuer``, the default: the identity issuer at ``issuer_url``
    signs claims it reads from Airflow's metadata database, docs/identity.md; or
    ``trusted_workers``: the worker signs its own claims), ``jwt_role``, ``identity_role``,
    ``approle_role_id``, ``namespace``, ``timeout_seconds``. Trusted workers only:
    ``jwt_issuer``, ``workload_key_path``, or, on the Kubernetes executor without a key file,
    ``workload_signer`` ``vault_transit`` with ``kubernetes_role`` (the pod logs in with its
    service-account token and Vault signs the step's JWT). Every extra, with its
    default: the configuration reference (docs/configuration.md, generated).

    Against a hoop.dev gateway: ``auth`` ``hoop_api_key`` and the ``hpk_`` key as password
    (no Vault); ``gateway_kind`` (``airflow-hoop`` or ``hoop.dev``) overrides the guess. See
    docs/hoop.md for what holds then.
    """

    conn_name_attr = "hoop_conn_id"
    default_conn_name = DEFAULT_HOOP_CONN_ID
    conn_type = "hoop"
    hook_name = "Hoop gateway"

    def __init__(self, hoop_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__()
        self.hoop_conn_id = hoop_conn_id

    def get_config(self) -> HoopConnectionConfig:
        """The validated configuration of the connection; errors name the field."""
        conn = self.get_connection(self.hoop_conn_id)
        extra = dict(conn.extra_dejson)
        gateway_url = _gateway_url(conn.host, conn.port, extra.pop("scheme", None))
        if not gateway_url:
            raise ConfigError(
                f"connection '{self.hoop_conn_id}' has no gateway URL in its host field",
                "set host to the gateway URL, e.g. https://hoop-gateway:8009",
            )
        if extra.get("auth") == HOOP_API_KEY_AUTH:
            return self._api_key_config(gateway_url, conn.password, extra)
        vault_fields = {k: v for k, v in extra.items() if k in StepVaultConfig.model_fields}
        vault_fields["url"] = extra.get("vault_url") or vault_fields.get("url")
        # One private CA for both by default (ca_file); vault_ca_file when Vault's differs.
        vault_fields["ca_file"] = extra.get("vault_ca_file") or extra.get("ca_file")
        if conn.password:
            # AppRole's secret_id: the step's login, or the transit signer's (Kubernetes recipe).
            approle = extra.get("auth") == "approle" or extra.get("signer_auth") == "approle"
            secret_field = "approle_secret_id" if approle else "token"
            vault_fields[secret_field] = SecretStr(conn.password)
        try:
            return HoopConnectionConfig(
                gateway_url=gateway_url,
                vault=StepVaultConfig(**vault_fields),
                gateway_kind=extra.get("gateway_kind"),
                ca_file=extra.get("ca_file"),
                timeout_seconds=float(extra.get("timeout_seconds", 75.0)),
                poll_interval_seconds=float(extra.get("poll_interval_seconds", 0.5)),
                revoke_at_end=extra.get("revoke_at_end", "background"),
            )
        except ValidationError as exc:
            fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors())
            raise ConfigError(
                f"connection '{self.hoop_conn_id}' is incomplete or invalid ({fields})",
                "set the named extras on the 'hoop' connection (vault_url is required)",
            ) from None

    def _api_key_config(
        self, gateway_url: str, password: str | None, extra: dict[str, Any]
    ) -> HoopConnectionConfig:
        """``auth: hoop_api_key``: a hoop.dev gateway, the ``hpk_`` key in the password field."""
        if not password or not password.startswith("hpk_"):
            raise ConfigError(
                f"connection '{self.hoop_conn_id}' has auth hoop_api_key but its password is "
                "not a hoop API key (hpk_...)",
                "put the key from hoop's POST /api/api-keys in the connection's password",
            )
        try:
            return HoopConnectionConfig(
                gateway_url=gateway_url,
                api_key=SecretStr(password),
                gateway_kind=extra.get("gateway_kind"),
                ca_file=extra.get("ca_file"),
                timeout_seconds=float(extra.get("timeout_seconds", 75.0)),
                poll_interval_seconds=float(extra.get("poll_interval_seconds", 0.5)),
            )
        except ValidationError as exc:
            # Only the messages: pydantic's input echo could hold the key.
            problems = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
            raise ConfigError(
                f"connection '{self.hoop_conn_id}' is invalid ({problems})",
                "correct the 'hoop' connection's extras (see docs/hoop.md)",
            ) from None

    def get_step(self, context: Mapping[str, Any] | None = None) -> GovernedStep:
        """The governed step of the running task (fails closed outside a task)."""
        if context is None:
            context = current_context()
        identity = StepIdentity.from_context(context)
        return step_for(self.hoop_conn_id, self.get_config(), identity)

    def test_connection(self) -> tuple[bool, str]:
        """The UI's "Test" button: is the gateway at the connection's URL up (``/api/healthz``)."""
        from airflow_hoop.client.http import GatewayClient

        config = self.get_config()
        with GatewayClient(config.gateway_url, token=lambda: "", ca_file=config.ca_file) as client:
            try:
                return client.healthz(), f"gateway {config.gateway_url} is up"
            except Exception as exc:
                return False, str(exc)


def current_context() -> Mapping[str, Any]:
    """The running task's context, or an IdentityError: a step needs a task."""
    from airflow.sdk import get_current_context

    try:
        return get_current_context()
    except Exception:
        raise IdentityError(
            "no running Airflow task, so there is no step identity to govern this call",
            "call the hook from inside a task (operator execute or @task function)",
        ) from None


def _gateway_url(host: str | None, port: int | None, scheme: str | None) -> str | None:
    if not host:
        return None
    if "://" in host:
        return host.rstrip("/") if not port else f"{host.rstrip('/')}:{port}"
    return f"{scheme or 'https'}://{host}" + (f":{port}" if port else "")
