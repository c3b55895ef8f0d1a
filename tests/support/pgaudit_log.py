"""pgaudit's entries read back from PostgreSQL's JSON log (a stack started with ``pgaudit``).

Each JSON log line is one entry (``json``); pgaudit's message is ``AUDIT: `` and a CSV record
(``csv``): audit type, statement id, substatement id, class, command, object type, object name,
statement, parameter. Statement ids count per backend; a substatement (a statement a function
runs) shares its top-level statement's id.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

_PREFIX = "AUDIT: "


@dataclass(frozen=True)
class AuditEntry:
    """One pgaudit entry with the session fields PostgreSQL logged beside it."""

    pid: int
    user: str
    database: str
    application_name: str
    statement_id: int
    substatement_id: int
    audit_class: str
    command: str
    statement: str
    #: The whole log message as PostgreSQL wrote it.
    message: str


def read_entries(path: Path) -> list[AuditEntry]:
    """Every pgaudit entry of the log, in order."""
    entries = []
    with path.open(encoding="utf-8") as log:
        for line in log:
            entry = json.loads(line)
            message = entry.get("message", "")
            if not message.startswith(_PREFIX):
                continue
            fields = next(csv.reader([message[len(_PREFIX) :]]))
            entries.append(
                AuditEntry(
                    pid=int(entry["pid"]),
                    user=entry.get("user", ""),
                    database=entry.get("dbname", ""),
                    application_name=entry.get("application_name", ""),
                    statement_id=int(fields[1]),
                    substatement_id=int(fields[2]),
                    audit_class=fields[3],
                    command=fields[4],
                    statement=fields[7],
                    message=message,
                )
            )
    return entries
