"""bench/launcher_start.py as a real process: its table and goal, never its timings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from _spawn import Child

BENCH = str(Path(__file__).parent.parent / "bench" / "launcher_start.py")


@pytest.mark.subprocess
@pytest.mark.bench
def test_launcher_start_bench_quick_prints_both_windows_and_the_goal() -> None:
    with Child(BENCH, "--quick", timeout=90) as child:
        code = child.finish()
        output = child.output
    assert code == 0, output
    header = next(i for i, x in enumerate(child.lines) if x.startswith("delay_ms"))
    assert child.lines[header].split() == ["delay_ms", "python", "launcher"], output
    rows = child.lines[header + 1 : child.index("window: python")]
    assert rows, output
    cell = r"(\d+/1 handled|-)"
    assert all(re.fullmatch(rf"\s*\d+\s+{cell}\s+{cell}", row) for row in rows), output
    # Delays from 0 in 10 ms steps.
    assert [row.split()[0] for row in rows] == [str(10 * i) for i in range(len(rows))]
    window = (
        r"window: (python|launcher) (\d+ ms \(half handled at \d+ ms\)|not settled)"
    )
    assert re.fullmatch(window, child.lines[-3]), output
    assert re.fullmatch(window, child.lines[-2]), output
    assert child.lines[-1].startswith("goal: launcher within 10 ms of python: "), output
