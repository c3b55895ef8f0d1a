"""bench/cpu_parts.py: the CPU a process tree spends in a window, children that came and went
included, and nothing of the processes outside it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path[:0] = [str(BENCH), str(BENCH / "dags")]

from cpu_parts import snapshot  # noqa: E402
from load import round_orders  # noqa: E402

# A parent that starts a child burning about 0.6 CPU-s, waits for it (reaping it), then idles
# until its stdin closes: the child's CPU survives only in the parent's children times.
PARENT = """
import subprocess, sys
burn = "import time\\nend = time.process_time() + 0.6\\nwhile time.process_time() < end: pass"
subprocess.run([sys.executable, "-c", burn], check=True)
print("burnt", flush=True)
sys.stdin.read()
"""


def test_a_reaped_childs_cpu_counts_for_its_tree_and_only_there() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        start = snapshot({"tree": parent.pid})
        assert parent.stdout is not None
        assert parent.stdout.readline().strip() == "burnt"
        used = snapshot({"tree": parent.pid}).since(start)
    finally:
        parent.communicate("")
    # The child's 0.6 s, plus some of the interpreters' start-up after the first snapshot.
    assert 0.55 <= used.parts["tree"] <= 3.0, used
    # The machine was busy at least that long; what is not the tree's is "other".
    assert used.machine_busy_s >= used.parts["tree"] - 0.05
    assert abs(sum(used.parts.values()) - used.machine_busy_s) < 1e-6


def test_an_idle_tree_spends_nothing() -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.5)  # the interpreter's start-up may still be running: wait it out first
        start = snapshot({"idle": sleeper.pid})
        time.sleep(0.5)
        assert snapshot({"idle": sleeper.pid}).since(start).parts["idle"] < 0.05
    finally:
        sleeper.kill()
        sleeper.wait()


def test_rounds_alternate_the_order_of_the_dags() -> None:
    orders = round_orders(("stock", "governed"), 3)
    assert orders == [("stock", "governed"), ("governed", "stock"), ("stock", "governed")]
    assert round_orders(("governed",), 2) == [("governed",), ("governed",)]


def test_a_roots_descendants_can_be_a_part_of_their_own() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        start = snapshot({"parent": parent.pid}, {"children": parent.pid})
        assert parent.stdout is not None
        assert parent.stdout.readline().strip() == "burnt"
        used = snapshot({"parent": parent.pid}, {"children": parent.pid}).since(start)
    finally:
        parent.communicate("")
    assert 0.55 <= used.parts["children"] <= 2.0, used  # the child's burn, reaped
    assert used.parts["parent"] < 0.5, used  # the parent only waited (and started up)
