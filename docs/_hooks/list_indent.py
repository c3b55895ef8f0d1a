"""MkDocs hook: refuse nested lists that Python-Markdown would flatten.

CommonMark (GitHub, most editors) nests a list under ``1. item`` when it is indented by 3
spaces; Python-Markdown, which builds this site, needs 4, and otherwise renders the nested
items as siblings (``make demo`` once read as 8 steps). The lint parses each page with
markdown-it-py (CommonMark: what the author meant) and reports every nested list item whose
indentation is not a multiple of 4 (what Python-Markdown needs). Under ``mkdocs build
--strict`` the warning fails the build; ``tests/unit/test_docs_site.py`` runs it on README.md.
"""

from __future__ import annotations

import logging
from typing import Any

from markdown_it import MarkdownIt

log = logging.getLogger("mkdocs.hooks.list_indent")

INDENT = 4


def misindented_lines(markdown: str) -> list[int]:
    """1-based line numbers of nested list items not indented by a multiple of 4 spaces."""
    lines = markdown.splitlines()
    depth = 0
    bad: list[int] = []
    for token in MarkdownIt("commonmark").parse(markdown):
        if token.type in ("bullet_list_open", "ordered_list_open"):
            depth += 1
        elif token.type in ("bullet_list_close", "ordered_list_close"):
            depth -= 1
        elif token.type == "list_item_open" and depth > 1 and token.map:
            line = lines[token.map[0]]
            # Blockquote markers are not indentation; a list in a quote is measured after them.
            indent = len(line) - len(line.lstrip(" "))
            if indent % INDENT:
                bad.append(token.map[0] + 1)
    return bad


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    for line in misindented_lines(markdown):
        log.warning(
            "%s:%d: nested list item indented by a non-multiple of %d spaces; "
            "Python-Markdown renders it flat (indent nested lists by 4)",
            page.file.src_path,
            line,
            INDENT,
        )
    return markdown
