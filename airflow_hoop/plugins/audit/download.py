""" "Export for review": the evidence bundle of the Audit page's time window, as a download.

The bundle is what ``airflow-hoop audit export`` writes (records with the checkpoints that
sign them, the public key, report.html/csv, a manifest), produced on the API server by that
same command in a child process, then streamed as ``.tar.gz`` and deleted. The reviewer
unpacks it and runs ``airflow-hoop audit verify --bundle DIR`` offline.

A bundle holds every record of the window (the chain cannot skip records), so exporting
needs read access to every DAG; the DAG and connection filters narrow the report only.
Large windows belong to the CLI: above ``MAX_UI_EXPORT_RECORDS`` the page says so.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from airflow.api_fastapi.core_api.security import GetUserDep
from fastapi import APIRouter
from fastapi.responses import Response, StreamingResponse

from airflow_hoop.client.audit import EPOCH
from airflow_hoop.client.tls import CA_FILE_ENV
from airflow_hoop.errors import HoopError
from airflow_hoop.plugins.audit.form import SearchFormDep
from airflow_hoop.plugins.audit.pages import client, gateway_error, may_read, render
from airflow_hoop.plugins.settings import PluginSettings

#: More records than this in the window: use the CLI (minutes of work, a large file).
MAX_UI_EXPORT_RECORDS = 200_000
EXPORT_TIMEOUT_S = 600.0
_CHUNK = 1 << 20

router = APIRouter(prefix="/audit")


@router.get("/export")
def export(user: GetUserDep, form: SearchFormDep) -> Response:
    """Download the evidence bundle of the form's time window (``.tar.gz``)."""
    started = time.perf_counter()
    if not may_read(user, None):
        return render(
            "audit_error.html",
            started,
            status_code=403,
            message="Permission missing: exporting needs read access to every DAG.",
            fix="A bundle holds every record of its time window (the chain cannot skip "
            "records), including other DAGs' commands. Ask an Airflow admin, or ask an "
            "auditor to run airflow-hoop audit export.",
        )
    try:
        since = form.when(form.since, "From") or EPOCH
        until = form.when(form.until, "Until") or datetime.now(timezone.utc)
    except ValueError as exc:
        return render("audit_error.html", started, status_code=400, message=str(exc))
    if until <= since:
        return render(
            "audit_error.html", started, status_code=400, message="Until must be after From"
        )
    settings = PluginSettings.from_airflow()
    try:
        url, key = settings.gateway_with(
            settings.auditor_api_key, views="Audit pages", role="auditor"
        )
        with client() as gateway:
            window = gateway.window(since, until)
    except HoopError as exc:
        return gateway_error(exc, started)
    if window.records > MAX_UI_EXPORT_RECORDS:
        return render(
            "audit_error.html",
            started,
            status_code=413,
            message=f"The window holds {window.records} records, more than the UI exports "
            f"({MAX_UI_EXPORT_RECORDS}).",
            fix="Pick a shorter window, or run: airflow-hoop audit export --gateway URL "
            f"--since {since.isoformat()} --until {until.isoformat()} --out DIR",
            css="error",
        )
    work = Path(tempfile.mkdtemp(prefix="airflow-hoop-export-"))
    out = work / "bundle"
    command = [
        sys.executable,
        "-m",
        "airflow_hoop.cli.main",
        "audit",
        "export",
        "--gateway",
        url,
        "--since",
        since.isoformat(),
        "--until",
        until.isoformat(),
        "--out",
        str(out),
    ]
    if form.dag_id:
        command += ["--dag", form.dag_id]
    if form.connection:
        command += ["--connection", form.connection]
    # The key goes by environment, never on the command line (ps would show it).
    env = {**os.environ, "HOOP_API_KEY": key}
    if settings.ca_file:
        env[CA_FILE_ENV] = settings.ca_file
    try:
        done = subprocess.run(
            command, env=env, capture_output=True, timeout=EXPORT_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        shutil.rmtree(work, ignore_errors=True)
        return render(
            "audit_error.html",
            started,
            status_code=504,
            message=f"The export took longer than {EXPORT_TIMEOUT_S:.0f} s.",
            fix="Run airflow-hoop audit export from a shell for this window.",
        )
    if done.returncode not in (0, 1) or not (out / "manifest.json").exists():
        shutil.rmtree(work, ignore_errors=True)
        reason = done.stderr.decode("utf-8", "replace").strip().splitlines()
        return render(
            "audit_error.html",
            started,
            status_code=502,
            message="The export failed: " + (reason[-1] if reason else f"exit {done.returncode}"),
        )
    name = f"airflow-hoop-bundle-{since:%Y%m%dT%H%M%SZ}-{until:%Y%m%dT%H%M%SZ}"
    archive = work / f"{name}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(out, arcname=name)
    headers = {
        "Content-Disposition": f'attachment; filename="{_safe(name)}.tar.gz"',
        "Cache-Control": "no-store",
        # 0: written and verified; 1: written, but the ledger did not verify (see the report).
        "X-Airflow-Hoop-Verified": "true" if done.returncode == 0 else "false",
    }
    return StreamingResponse(_stream(archive, work), media_type="application/gzip", headers=headers)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def _stream(archive: Path, work: Path) -> Iterator[bytes]:
    try:
        with archive.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                yield chunk
    finally:
        shutil.rmtree(work, ignore_errors=True)
