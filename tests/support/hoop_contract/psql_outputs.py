"""Run a script the way hoop.dev's agent runs a postgres connection's exec, and keep the text.

hoop's default command for a postgres connection (reference/hoop-api.md §2.1) is
``psql -v ON_ERROR_STOP=1 -A -F<tab> -P pager=off -h $HOST -U $USER --port=$PORT $DB`` with the
script on stdin; the exec answer's ``output`` is stdout and stderr as they arrived. The
recordings' outputs come from this function, and a test re-runs it to show they still match.

Refresh the recordings after a psql upgrade (against any scratch database)::

    python tests/support/hoop_contract/psql_outputs.py --host /path/to/socket --port 5432 --user me
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from pathlib import Path

RECORDINGS = Path(__file__).parent / "recordings"


def hoop_psql_command(psql: str, host: str, port: int, user: str, dbname: str) -> list[str]:
    return [psql, "-v", "ON_ERROR_STOP=1", "-A", "-F\t", "-P", "pager=off", "-h", host,
            "-U", user, f"--port={port}", dbname]  # fmt: skip


def run_psql(
    script: str, *, psql: str, host: str, port: int, user: str, dbname: str
) -> tuple[str, int]:
    """(output, exit code) of the script under hoop's psql command line."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "PGTZ": "UTC"}
    proc = subprocess.run(
        hoop_psql_command(psql, host, port, user, dbname),
        input=script.encode(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # one pipe: the order hoop's event stream keeps
        env=env,
        timeout=60,
        check=False,
    )
    return proc.stdout.decode(), proc.returncode


def _refresh(args: argparse.Namespace) -> None:
    for path in sorted(RECORDINGS.glob("*.json")):
        data = json.loads(path.read_text())
        changed = False
        for exchange in data["exchanges"]:
            script = exchange.get("psql_script")
            if script is None:
                continue
            output, code = run_psql(
                script, psql=args.psql, host=args.host, port=args.port, user=args.user,
                dbname=args.dbname,
            )  # fmt: skip
            response = exchange["response"]
            if "text" in response:
                response["text"] = output
            else:
                response["json"]["output"] = output
                response["json"]["exit_code"] = code
                response["json"]["output_status"] = "success" if code == 0 else "failed"
            changed = True
        if changed:
            path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
            print(f"refreshed {path.name}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--psql", default="/usr/lib/postgresql/15/bin/psql")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, default=5432)
    parser.add_argument("--user", required=True)
    parser.add_argument("--dbname", default="postgres")
    _refresh(parser.parse_args())
