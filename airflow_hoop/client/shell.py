"""Run one shell command through a gateway and follow its output as it arrives.

The command is sent with a short sync window: a quick command answers in one round trip; a
longer one answers 202 and its output is read with long polls of ``/result/stream`` (our
gateway) or by polling ``GET /api/sessions/{id}`` (hoop.dev), each line handed to ``on_line``
as soon as it is complete. No Airflow import: the operator and the benchmark share this.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pydantic import BaseModel

from airflow_hoop.client.http import GatewayClient
from airflow_hoop.wire.sessions import ExecRequest, ExecResponse

#: Lines longer than this are cut in the log (the gateway keeps them whole in the output).
MAX_LOGGED_LINE = 65_536


class ShellResult(BaseModel):
    """The finished command: the gateway's answer and the line BashOperator would push to XCom."""

    response: ExecResponse
    last_line: str


class LineSplitter:
    """Turns a stream of text into complete lines (without their newline)."""

    def __init__(self, on_line: Callable[[str], None]) -> None:
        self._on_line = on_line
        self._pending = ""

    def feed(self, text: str) -> None:
        if not text:
            return
        *lines, self._pending = (self._pending + text).split("\n")
        for line in lines:
            self._emit(line)

    def flush(self) -> None:
        if self._pending:
            self._emit(self._pending)
            self._pending = ""

    def _emit(self, line: str) -> None:
        line = line.rstrip()
        if len(line) > MAX_LOGGED_LINE:
            line = f"{line[:MAX_LOGGED_LINE]}... [{len(line) - MAX_LOGGED_LINE} more characters]"
        self._on_line(line)


def last_line(output: str) -> str:
    """What ``SubprocessHook`` returns: its final ``readline()``, rstripped."""
    text = output[:-1] if output.endswith("\n") else output
    return text[text.rfind("\n") + 1 :].rstrip()


def run_shell(
    client: GatewayClient,
    request: ExecRequest,
    *,
    on_line: Callable[[str], None],
    on_session: Callable[[str], None] | None = None,
    long_poll_seconds: float = 5.0,
    poll_interval: float = 0.5,
) -> ShellResult:
    """Send the command, log its output line by line as it arrives, return the result."""
    lines = LineSplitter(on_line)
    response = client.exec(request, wait=False)
    if response.output_status != "running" or response.has_review:
        lines.feed(response.output)
        lines.flush()
        return ShellResult(response=response, last_line=_last_line_of(response))
    session_id = response.session_id
    if on_session is not None:
        on_session(session_id)
    offset = 0
    while True:
        chunk = client.read_output(session_id, offset, wait=long_poll_seconds)
        lines.feed(chunk.text)
        offset = chunk.next_offset
        if chunk.done:
            break
        if chunk.done is None:  # hoop.dev: no long poll, ask the session itself
            if client.get_session(session_id).status == "done":
                break
            time.sleep(poll_interval)
    final = client.wait_for(session_id)
    if len(final.output) > offset:  # e.g. the gateway's closing note
        lines.feed(final.output[offset:])
    lines.flush()
    return ShellResult(response=final, last_line=_last_line_of(final))


def _last_line_of(response: ExecResponse) -> str:
    # Our gateway reports it (it still knows it when the output was truncated); hoop does not.
    shell = response.airflow_hoop.shell if response.airflow_hoop else None
    return shell.last_line if shell is not None else last_line(response.output)
