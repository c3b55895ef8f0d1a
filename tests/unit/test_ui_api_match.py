"""The Access audit search's partial and wildcard DAG filter (plugins/ui_api.py)."""

from __future__ import annotations

import pytest

from airflow_hoop.plugins.ui_api import match_dags

DAGS = ["governed_etl", "governed_shell", "etl_daily", "reports", "Sales_ETL"]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("etl", ["governed_etl", "etl_daily", "Sales_ETL"]),  # contained, any case
        ("governed_*", ["governed_etl", "governed_shell"]),
        ("*_etl", ["governed_etl", "Sales_ETL"]),  # a wildcard anchors: no "etl_daily"
        ("report?", ["reports"]),
        ("nothing", []),
        ("  reports ", ["reports"]),
    ],
)
def test_match_dags(pattern: str, expected: list[str]) -> None:
    assert match_dags(pattern, DAGS) == expected
