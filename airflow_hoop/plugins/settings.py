"""PluginSettings: the API server's ``[hoop]`` section, read in one place.

The plugin's views talk to the gateway with keys only the API server holds (the task side
never sees them). Every value comes from Airflow's configuration, so it may be set in
``airflow.cfg`` or as ``AIRFLOW__HOOP__<NAME>`` (or Airflow's ``_cmd``/``_secret`` variants).
"""

from __future__ import annotations

from pydantic import BaseModel, SecretStr

from airflow_hoop.errors import ConfigError


class PluginSettings(BaseModel):
    """``[hoop]`` on the API server: the gateway, the two keys, and a private CA."""

    #: The gateway the views read and decide through.
    gateway_url: str | None = None
    #: API key with the approver role (Approvals views).
    approver_api_key: SecretStr | None = None
    #: API key with the auditor role (Audit views, "Export for review").
    auditor_api_key: SecretStr | None = None
    #: PEM file of the CA that signs the gateway's certificate (default: the public CAs).
    ca_file: str | None = None

    @classmethod
    def from_airflow(cls) -> PluginSettings:
        from airflow.configuration import conf

        def get(name: str) -> str | None:
            return conf.get("hoop", name, fallback=None) or None

        return cls(
            gateway_url=get("gateway_url"),
            approver_api_key=get("approver_api_key"),
            auditor_api_key=get("auditor_api_key"),
            ca_file=get("ca_file"),
        )

    def gateway_with(self, key: SecretStr | None, *, views: str, role: str) -> tuple[str, str]:
        """The gateway URL and ``key``, or a ConfigError naming both settings."""
        if not self.gateway_url or key is None:
            setting = f"{role}_api_key"
            raise ConfigError(
                f"the API server has no gateway URL or {role} key for the {views}",
                f"set [hoop] gateway_url and [hoop] {setting} (AIRFLOW__HOOP__GATEWAY_URL, "
                f"AIRFLOW__HOOP__{setting.upper()}) on the API server only; the key needs "
                f"role {role}",
            )
        return self.gateway_url, key.get_secret_value()
