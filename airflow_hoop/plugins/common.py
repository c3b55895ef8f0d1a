"""What the plugin's UI views share: their URL prefixes, the ``map_index`` query value, and
one Jinja2 environment (``plugins/templates``, autoescaped) with its per-row filters.

Imported by ``app.py`` (which the listener imports in every task process) and by the views;
it imports none of them. Its jinja2 and markupsafe imports cost a task nothing: Airflow's
plugins manager has already loaded both.

A task's Audit tab renders one table row per command (1,000 and more); Jinja macros cost
several microseconds per call, so the per-row pieces (a time, a possibly long text) are Python
filters. Values go into constant ``Markup`` templates with ``%``, which escapes each of them.
"""

from __future__ import annotations

import functools
from datetime import datetime

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

URL_PREFIX = "/hoop"
APPROVALS_PREFIX = URL_PREFIX + "/approvals"
AUDIT_PREFIX = URL_PREFIX + "/audit"
ISSUER_PREFIX = URL_PREFIX + "/issuer"

#: Longer texts (or more lines) start collapsed.
COLLAPSE_CHARS = 300
COLLAPSE_LINES = 4

# Markup templates: ``%`` escapes every value put into them.
_TIME = Markup('<time datetime="%s">%s UTC</time>')
_PRE = Markup('<pre class="%s">%s</pre>')
_DETAILS = Markup(
    '<details class="%s"><summary><code>%s</code> <span class="muted">(%d characters, show all)'
    "</span></summary><pre>%s</pre></details>"
)


def map_index_param(raw: str | None) -> int:
    """A task-instance view's ``map_index`` query value as an int (-1 when not mapped).

    Airflow leaves ``{MAP_INDEX}`` literal on unmapped task instance pages (airflow-3.md §2.5).
    """
    text = (raw or "").strip()
    return int(text) if text.lstrip("-").isdigit() else -1


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
    """The pages' templates (one environment per process: it caches compiled templates)."""
    env = Environment(
        loader=PackageLoader("airflow_hoop.plugins", "templates"),
        autoescape=select_autoescape(["html"], default=True),
    )
    env.filters["when"] = when
    env.filters["text_block"] = text_block
    return env
