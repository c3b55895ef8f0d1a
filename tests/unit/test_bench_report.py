"""bench/report.py renders docs/performance.md from BenchReport files: deterministic, one
section per benchmark in a fixed order, goals beside results, "not run" where there is no
(readable) results file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import report  # noqa: E402
from results_model import (  # noqa: E402
    BenchReport,
    BenchRow,
    BenchTable,
    Machine,
    Stats,
    at_least,
    at_most,
)

MACHINE = Machine(
    node="bench-host",
    cpu_model="Test CPU",
    cores=8,
    memory_gib=31.2,
    python="3.11.7",
    load_average_at_start=(0.25, 0.5, 1.0),
)


def _step_overhead() -> BenchReport:
    governed = Stats.of([40.0, 42.0, 44.0, 46.0, 100.0])
    return BenchReport(
        benchmark="step_overhead",
        issue="#2 [spine]",
        command="python bench/step_overhead.py -n 5 --json bench/results/step_overhead.json",
        machine=MACHINE,
        tables=[
            BenchTable(
                title="One-statement step",
                rows=[
                    BenchRow.of("governed step", "ms", governed),
                    BenchRow(
                        what="added per step", unit="ms", value=72.5, **at_most(72.5, 60, "ms")
                    ),
                ],
            )
        ],
        notes=["interleaved | drift hits both"],
    )


def _ledger() -> BenchReport:
    return BenchReport(
        benchmark="ledger",
        issue="#5 [evidence]",
        command="python bench/ledger.py --json bench/results/ledger.json",
        machine=MACHINE,
        tables=[
            BenchTable(
                title="Throughput",
                rows=[
                    BenchRow(
                        what="best",
                        unit="records/s",
                        value=12345.6,
                        **at_least(12345.6, 5000, "records/s"),
                    )
                ],
            )
        ],
    )


@pytest.fixture
def results(tmp_path: Path) -> Path:
    _step_overhead().write(tmp_path / "step_overhead.json")
    _ledger().write(tmp_path / "ledger.json")
    # The pre-BenchReport format some scripts wrote: reported as not run, never half-read.
    (tmp_path / "masking.json").write_text(json.dumps({"machine": {"cores": 2}, "runs": 5}))
    return tmp_path


def test_stats_median_and_p95() -> None:
    stats = Stats.of([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (stats.n, stats.median, stats.min, stats.max) == (5, 3.0, 1.0, 5.0)
    assert stats.p95 == 5.0 and stats.p05 == 1.0
    with pytest.raises(ValueError):
        Stats.of([])


def test_page_has_every_benchmark_in_order_with_goals(results: Path) -> None:
    page = report.render(results)
    titles = [line[3:] for line in page.splitlines() if line.startswith("## ")]
    assert titles == ["Summary", *[b.title for b in report.BENCHMARKS]]
    assert [b.name for b in report.BENCHMARKS] == [
        "step_overhead",
        "shell_overhead",
        "agent_tool_call",
        "ledger",
        "export_month",
        "masking",
        "approval_latency",
        "notifications",
        "ui",
        "load",
        "stream",
    ]
    step = page.split("## Step overhead")[1].split("## ")[0]
    assert "`python bench/step_overhead.py -n 5 --json bench/results/step_overhead.json`" in step
    assert "8 cores (Test CPU), 31.2 GiB, Python 3.11.7" in step
    assert "load average at start 0.25, 0.50, 1.00" in step
    # N, median, p95 of the samples; the goal and its verdict beside the result.
    assert "| governed step | 5 | 44.0 ms | 100 ms |  |  |  |" in step
    assert "| added per step |  |  |  | 72.5 ms | <= 60 ms (median) | **not met** |" in step
    assert "- interleaved | drift hits both" in step
    ledger = page.split("## Ledger")[1].split("## ")[0]
    assert "| best |  |  |  | 12,346 records/s | >= 5,000 records/s (median) | met |" in ledger
    summary = page.split("## Summary")[1].split("## ")[0]
    assert (
        "| [Step overhead](#step-overhead) | #2 [spine], #15 [enforce] | 0 of 1 | 8 cores, 31.2 GiB |"
        in summary
    )
    assert "| [Ledger](#ledger) | #5 [evidence] | 1 of 1 |" in summary


def test_missing_and_old_results_are_not_run(results: Path) -> None:
    page = report.render(results)
    load = page.split("## Load")[1]
    assert "**Not run.** Run it with `python bench/load.py --json bench/results/load.json`." in load
    masking = page.split("## Masking")[1].split("## ")[0]
    assert "is not a BenchReport: an older format; rerun it" in masking
    assert "| [UI](#ui) | #6 [ui] | not run | |" in page


def test_rendering_is_deterministic(results: Path, tmp_path: Path) -> None:
    first = report.render(results)
    # Same files written again (new mtimes, new order on disk): the same page, byte for byte.
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in sorted(results.glob("*.json"), reverse=True):
        (copy / path.name).write_bytes(path.read_bytes())
    assert report.render(copy) == first


def test_cli_writes_the_page(results: Path, tmp_path: Path) -> None:
    out = tmp_path / "performance.md"
    done = subprocess.run(
        [sys.executable, str(BENCH / "report.py"), "--results", str(results), "--out", str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.read_text() == report.render(results)
    assert "2 of 11 benchmarks with results" in done.stdout


def test_a_report_survives_its_json_round_trip(tmp_path: Path) -> None:
    original = _step_overhead()
    original.write(tmp_path / "r.json")
    assert BenchReport.read(tmp_path / "r.json") == original
