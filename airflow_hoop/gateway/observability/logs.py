"""The gateway's log format: text for a terminal, JSON lines for a log shipper.

JSON comes from python-json-logger (the format teams' collectors already parse); every line
carries the process's ``instance`` id, the same id its sessions and leases are tagged with, so
a log line and a recovery record name the same process.
"""

from __future__ import annotations

import logging

from pythonjsonlogger.json import JsonFormatter

from airflow_hoop.gateway.db.store import instance_id
from airflow_hoop.gateway.observability_settings import ObservabilitySettings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _InstanceFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.instance = instance_id()
        return True


def configure_logging(settings: ObservabilitySettings) -> None:
    """Replace the root handlers with one stderr handler in the configured format."""
    handler = logging.StreamHandler()
    if settings.log_format == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s %(instance)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
        handler.addFilter(_InstanceFilter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
