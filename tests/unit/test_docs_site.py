"""The docs site: builds with ``mkdocs build --strict``, lists every page in its nav, and its
generated pages (gateway API, configuration) cover every route and every setting."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from airflow_hoop.gateway.settings import GatewaySettings, TlsSettings, VaultAuth
from airflow_hoop.task.vault_config import StepVaultConfig

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def _nav_pages(nav: list[Any]) -> set[str]:
    pages: set[str] = set()
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        if isinstance(value, list):
            pages |= _nav_pages(value)
        else:
            pages.add(value)
    return pages


def test_every_page_is_in_the_nav() -> None:
    # mkdocs.yml uses no custom tags, so the safe loader reads it.
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    nav = _nav_pages(config["nav"])
    written = {
        p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md") if "_hooks" not in p.parts
    }
    generated = {"gateway-api.md", "configuration.md"}
    assert written - nav == set(), "add these pages to mkdocs.yml's nav"
    assert nav - written - generated == set(), "the nav names pages that do not exist"


def test_api_page_and_openapi_cover_every_route(site: Path) -> None:
    from airflow_hoop.gateway.app import create_app

    spec = json.loads((site / "openapi.json").read_text())
    settings = GatewaySettings(
        database_dsn="host=x",
        vault={
            "url": "http://v",
            "auth": {"method": "token", "token": "t"},
            "identity_issuer": "i",
        },
    )
    routes = {
        route.path
        for route in create_app(settings).routes
        if getattr(route, "include_in_schema", False)
    }
    assert routes and routes <= set(spec["paths"])
    page = (site / "gateway-api" / "index.html").read_text()
    for path in spec["paths"]:
        assert path in page, f"{path} missing from the API page"


def test_configuration_page_names_every_setting(site: Path) -> None:
    page = (site / "configuration" / "index.html").read_text()
    for model in (GatewaySettings, TlsSettings, VaultAuth):
        for name in model.model_fields:
            assert f"<code>{name}</code>" in page, f"{model.__name__}.{name} is not documented"
    for name in ("namespace", "auth", "workload_key_path", "approle_role_id"):
        assert name in StepVaultConfig.model_fields
        assert f"<code>{name}</code>" in page


def test_reference_renders_the_operators_from_their_docstrings(site: Path) -> None:
    page = (site / "reference" / "index.html").read_text()
    for name in (
        "HoopPostgresOperator",
        "HoopShellOperator",
        "HoopHook",
        "HoopPostgresHook",
        "HoopApprovalSensor",
        "ReviewTrigger",
    ):
        assert 'id="airflow_hoop.' in page and name in page
    # A sentence of a docstring, so the page is not only headings.
    assert "A drop-in replacement for" in page


def _list_indent() -> Any:
    spec = importlib.util.spec_from_file_location("list_indent", DOCS / "_hooks" / "list_indent.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_list_lint_finds_lists_python_markdown_would_flatten() -> None:
    lint = _list_indent()
    three = "1. step one;\n2. step two:\n   - a nested item\n   - another\n3. step three\n"
    four = three.replace("\n   - ", "\n    - ")
    two = "- top\n  - nested by two\n"
    fenced = "```\n1. x\n   - not a list: code\n```\n"
    assert lint.misindented_lines(three) == [3, 4]
    assert lint.misindented_lines(four) == []
    assert lint.misindented_lines(two) == [2]
    assert lint.misindented_lines(fenced) == []


def test_readme_and_docs_have_no_flattened_lists() -> None:
    lint = _list_indent()
    pages = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
    bad = {p.name: lines for p in pages if (lines := lint.misindented_lines(p.read_text()))}
    assert bad == {}, "indent nested lists by 4 spaces"
