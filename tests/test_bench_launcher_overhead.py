"""bench/launcher_overhead.py as a real process: its table and goals, not timings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from _spawn import Child

BENCH = str(Path(__file__).parent.parent / "bench" / "launcher_overhead.py")
CELL = r"\d+\.\d \(\s*\d+-\d+\)"


@pytest.mark.subprocess
@pytest.mark.bench
def test_launcher_overhead_bench_quick_prints_the_table_and_both_goals() -> None:
    with Child(BENCH, "--quick", "--no-peers", timeout=120) as child:
        code = child.finish()
        output = child.output
    assert code == 0, output
    header = child.index("program")
    assert child.lines[header].split()[:2] == ["program", "runs"], output
    rows = child.lines[header + 1 : header + 3]
    assert [row.split()[0] for row in rows] == ["app", "launcher"], output
    assert all(re.fullmatch(rf"\w+\s+2\s+{CELL}\s+{CELL}", row) for row in rows), output
    assert not any(line.startswith("failed:") for line in child.lines), output
    difference = r"launcher - app \((start|stop)\): [+-]\d+\.\d ms"
    assert re.fullmatch(difference, child.lines[-4]), output
    assert re.fullmatch(difference, child.lines[-3]), output
    verdict = r"(met|NOT MET) \([+-]\d+\.\d ms\)"
    start = "goal: launcher start within 20 ms of the app alone: "
    stop = "goal: launcher SIGTERM->exit within 5 ms of the app alone: "
    assert re.fullmatch(re.escape(start) + verdict, child.lines[-2]), output
    assert re.fullmatch(re.escape(stop) + verdict, child.lines[-1]), output
