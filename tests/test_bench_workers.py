"""bench/workers.py, run as a real process: its tables, never its timings."""

from __future__ import annotations

from pathlib import Path

import pytest
from _spawn import Child

BENCH = str(Path(__file__).parent.parent / "bench" / "workers.py")


@pytest.mark.subprocess
def test_workers_bench_quick_prints_throughput_and_reload_rows() -> None:
    with Child(
        BENCH, "--quick", "--servers", "launcher,uvicorn-fd3", timeout=90
    ) as child:
        code = child.finish()
    assert code == 0, child.output
    rows = [
        line.split()
        for line in child.lines
        if line.split()[:1] in (["launcher"], ["uvicorn-fd3"])
    ]
    assert [row[0] for row in rows] == ["launcher", "launcher", "uvicorn-fd3"], rows
    throughput, *reloads = rows
    assert len(throughput) == 4, child.output
    assert float(throughput[1]) > 0, child.output  # N = 1
    assert float(throughput[2]) > 0, child.output  # N = 2
    for row in reloads:  # answered, failed, lost, refused, not-200
        assert int(row[1]) > 0, child.output
        assert row[2:] == ["0", "0", "0", "0"], child.output
