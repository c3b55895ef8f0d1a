"""What every benchmark reports: tables of medians and p95 beside their goals.

Each script in bench/ writes one `BenchReport` as JSON (`--json bench/results/<name>.json`);
`make bench` runs them all and `bench/report.py` renders docs/performance.md from the files,
so the page is reproducible and every number carries the command and machine that made it.
"""

from __future__ import annotations

import os
import platform
import shlex
import statistics
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field


class Machine(BaseModel):
    """Where a number was taken: the same script on another machine gives other numbers."""

    node: str
    cpu_model: str
    cores: int
    memory_gib: float
    python: str
    load_average_at_start: tuple[float, float, float]

    @classmethod
    def here(cls) -> Machine:
        return cls(
            node=platform.node(),
            cpu_model=_cpu_model(),
            cores=os.cpu_count() or 0,
            memory_gib=round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            python=platform.python_version(),
            load_average_at_start=os.getloadavg(),
        )

    def describe(self) -> str:
        return f"{self.cores} cores ({self.cpu_model}), {self.memory_gib} GiB, Python {self.python}"


class Stats(BaseModel):
    """Median and p95 of N samples, in the unit of the samples (p05 too: for a rate, the slow
    tail is the low end)."""

    n: int
    median: float
    p95: float
    min: float
    max: float
    p05: float | None = None

    @classmethod
    def of(cls, samples: list[float]) -> Stats:
        if not samples:
            raise ValueError("no samples")
        ordered = sorted(samples)

        def pct(q: float) -> float:
            return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

        return cls(
            n=len(ordered),
            median=statistics.median(ordered),
            p95=pct(0.95),
            min=ordered[0],
            max=ordered[-1],
            p05=pct(0.05),
        )

    def legacy(self, unit: str = "ms") -> dict[str, float]:
        """The ``{"n", "median_<unit>", "p95_<unit>"}`` dict the scripts printed before."""
        return {"n": self.n, f"median_{unit}": self.median, f"p95_{unit}": self.p95}


class BenchRow(BaseModel):
    """One line of a table: a measured quantity, optionally against its goal."""

    what: str
    unit: str
    median: float | None = None
    p95: float | None = None
    n: int | None = None
    value: float | None = None  # a single derived figure (a throughput, a difference)
    goal: str | None = None  # e.g. "<= 300 ms median"
    met: bool | None = None
    note: str | None = None

    @classmethod
    def of(cls, what: str, unit: str, stats: Stats, **extra: object) -> BenchRow:
        """A row from measured samples: N, median and p95."""
        return cls.model_validate(
            {"what": what, "unit": unit, "median": stats.median, "p95": stats.p95, "n": stats.n}
            | extra
        )


def at_most(value: float, limit: float, unit: str, of: str = "median") -> dict[str, object]:
    """``goal``/``met`` of a row whose goal is an upper bound (``**at_most(...)``)."""
    return {"goal": f"<= {limit:,g} {unit} ({of})", "met": value <= limit}


def at_least(value: float, limit: float, unit: str, of: str = "median") -> dict[str, object]:
    """``goal``/``met`` of a row whose goal is a lower bound."""
    return {"goal": f">= {limit:,g} {unit} ({of})", "met": value >= limit}


def command() -> str:
    """The command line that ran this script, as a reader would type it from the repo root."""
    script = Path(sys.argv[0]).resolve()
    root = Path(__file__).resolve().parents[1]
    shown = script.relative_to(root) if script.is_relative_to(root) else script
    return shlex.join(["python", str(shown), *sys.argv[1:]])


class BenchTable(BaseModel):
    title: str
    rows: list[BenchRow]


class BenchReport(BaseModel):
    """One benchmark script's result, as written to bench/results/<benchmark>.json."""

    benchmark: str  # file stem, e.g. "step_overhead"
    issue: str  # e.g. "#2 [spine]"
    command: str  # exactly what reproduces it
    machine: Machine
    tables: list[BenchTable]
    notes: list[str] = Field(default_factory=list)
    #: The script's own detailed results (samples, breakdowns), kept for whoever digs deeper.
    details: dict[str, Any] = Field(default_factory=dict)

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.model_dump_json(indent=2))
        print(f"results written to {path}")

    @classmethod
    def read(cls, path: Path) -> BenchReport:
        return cls.model_validate_json(path.read_text())


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
