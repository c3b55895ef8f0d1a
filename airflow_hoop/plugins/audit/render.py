"""The Audit pages' Jinja2 environment and its two hot filters.

A task's tab renders one table row per command (1,000 and more); Jinja macros cost several
microseconds per call, so the per-row pieces (a time, a possibly long text) are Python filters.
Values go into constant ``Markup`` templates with ``%``, which escapes each of them.
"""

from __future__ import annotations

import functools
from datetime import datetime

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from airflow_hoop.plugins.audit.model import COLLAPSE_CHARS, COLLAPSE_LINES

# Markup templates: ``%`` escapes every value put into them.
_TIME = Markup('<time datetime="%s">%s UTC</time>')
_PRE = Markup('<pre class="%s">%s</pre>')
_DETAILS = Markup(
    '<details class="%s"><summary><code>%s</code> <span class="muted">(%d characters, show all)'
    "</span></summary><pre>%s</pre></details>"
)


def when(value: datetime | None) -> Markup:
    """A time as ``<time>``: UTC text, replaced by the browser's local time by audit.js."""
    if value is None:
        return Markup("")
    return _TIME % (value.isoformat(), value.strftime("%Y-%m-%d %H:%M:%S"))


def text_block(text: str, css: str = "") -> Markup:
    """A command or output: shown whole when short, else collapsed behind its first line."""
    if len(text) <= COLLAPSE_CHARS and text.count("\n") < COLLAPSE_LINES:
        return _PRE % (css, text)
    stripped = text.strip()
    first = stripped.splitlines()[0][:120] if stripped else ""
    return _DETAILS % (css, first, len(text), text)


@functools.cache
def templates() -> Environment:
    env = Environment(
        loader=PackageLoader("airflow_hoop.plugins", "templates"),
        autoescape=select_autoescape(["html"], default=True),
    )
    env.filters["when"] = when
    env.filters["text_block"] = text_block
    return env
