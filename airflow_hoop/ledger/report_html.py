"""The report's HTML pieces: escaped table rows, a streamed table, the page style."""

from __future__ import annotations

import html
import shutil
from pathlib import Path
from typing import IO, Any

#: Rows of each HTML table (all rows are in report.csv).
HTML_ROWS = 2000


class HtmlRows:
    """Table rows written to a scratch file as they come; the first HTML_ROWS are kept."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = open(path, "w", encoding="utf-8")  # noqa: SIM115
        self.rows = 0

    def add(self, row: dict[str, Any], keys: tuple[str, ...]) -> None:
        self.rows += 1
        if self.rows <= HTML_ROWS:
            cells = "".join(f"<td>{html.escape(cell(row.get(k)))}" for k in keys)
            self.file.write(f"<tr>{cells}\n")

    def close(self) -> None:
        self.file.close()

    def copy_into(self, out: IO[str], headers: tuple[str, ...]) -> None:
        out.write("<table><tr>" + "".join(f"<th>{h}" for h in headers) + "\n")
        with open(self.path, encoding="utf-8") as rows:
            shutil.copyfileobj(rows, out)
        out.write("</table>")
        if self.rows > HTML_ROWS:
            out.write(f"<p>First {HTML_ROWS} of {self.rows} rows; all are in report.csv.</p>")


def tr(values: list[Any]) -> str:
    return "<tr>" + "".join(f"<td>{html.escape(cell(v))}" for v in values)


def cell(value: Any) -> str:
    if value is None:
        return ""
    text = str(value)
    return text if len(text) <= 300 else text[:299] + "…"


STYLE = (
    "<style>body{font:14px system-ui,sans-serif;margin:2em}table{border-collapse:collapse;"
    "margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 6px;text-align:left;"
    "vertical-align:top;max-width:40em;overflow-wrap:anywhere}.ok{color:#070}"
    ".bad{color:#b00}.facts th{background:#f4f4f4}</style>"
)
