"""bench/scale.py, bench/conn_memory.py and bench/middleware_cost.py as real
processes: their tables and goals, never their timings."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest
from _spawn import Child

BENCH = Path(__file__).parent.parent / "bench"
SERVERS = ["bare-asyncio", "ours-asyncio", "ours-trio", "bare-uvicorn"]


@pytest.mark.subprocess
@pytest.mark.bench
def test_scale_bench_quick_prints_a_row_per_server_and_the_goals() -> None:
    bench = (str(BENCH / "scale.py"), "--quick", "--work-ms", "300")
    with Child(*bench, timeout=120) as child:
        code = child.finish()
        output = child.output
    assert code == 0, output
    header = next(
        i for i, x in enumerate(child.lines) if x.split()[:2] == ["server", "conns"]
    )
    columns = child.lines[header].split()
    rows = [line.split() for line in child.lines[header + 1 : header + 5]]
    assert [row[0] for row in rows] == SERVERS, output
    table = {row[0]: dict(zip(columns, row, strict=True)) for row in rows}
    # Memory two ways: held per idle connection (opened in batches, as
    # bench/conn_memory.py measures it) and left by a burst of N first requests.
    for row in table.values():
        float(row["KB/conn"]), float(row["burst-KB"])
    for name in ("ours-asyncio", "ours-trio"):
        # Every request in flight at the SIGTERM is answered; a clean exit.
        assert table[name]["answered"] == "8", output
        assert table[name]["exit"] == "0", output
        assert table[name]["conns"] == "100", output
    assert "8 x /work?ms=300 and SIGTERM" in output  # --work-ms
    goals = [line for line in child.lines if line.startswith("goal: ")]
    assert [goal.split()[1] for goal in goals] == ["ours-asyncio", "ours-trio"], output


@pytest.mark.subprocess
@pytest.mark.bench
def test_middleware_cost_bench_quick_prints_both_wrappings_and_the_goals() -> None:
    with Child(str(BENCH / "middleware_cost.py"), "--quick", timeout=60) as child:
        code = child.finish()
        output = child.output
    assert code == 0, output
    rows = [re.split(r"\s{2,}", line.strip())[0] for line in child.lines[1:6]]
    assert rows == [
        "bare",
        "wrapped, as serve() builds it",
        "extra",
        "wrapped, user-wrapped",
        "extra",
    ], output
    assert all(
        re.fullmatch(r"\s*[\w(), -]+?\s+-?\d+ ns/request  \(.*\)", x)
        for x in child.lines[1:6]
    ), output
    for line, label in zip(
        child.lines[6:8], ("as serve\\(\\) builds it", "user-wrapped"), strict=True
    ):
        assert re.fullmatch(
            rf"goal: middleware cost \({label}\) <= 500 ns/request:"
            r" (met|NOT MET) \(-?\d+\)",
            line,
        ), output


@pytest.mark.subprocess
@pytest.mark.bench
@pytest.mark.parametrize("load", ["wrk", "without_wrk"])
def test_throughput_bench_quick_prints_a_row_per_server_and_the_goal(load: str) -> None:
    if load == "wrk" and shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (apt-get install wrk; .ci/run does as root)")
    # Without wrk on the PATH: the bench says so and uses its own clients.
    env = None if load == "wrk" else {"PATH": str(Path(sys.executable).parent)}
    bench = (str(BENCH / "throughput.py"), "--quick", "--seconds", "0.3")
    with Child(*bench, timeout=120, env=env) as child:
        code = child.finish()
        output = child.output
    assert code == 0, output
    header = next(
        i for i, x in enumerate(child.lines) if x.split()[:2] == ["server", "req/s"]
    )
    assert child.lines[header].split() == [
        "server",
        "req/s",
        "p50-ms",
        "p99-ms",
        "ratio",
    ]
    rows = [line.split() for line in child.lines[header + 1 : header + 7]]
    names = [
        "bare-asyncio",
        "ours-asyncio",
        "bare-trio",
        "ours-trio",
        "bare-uvicorn",
        "ours-uvicorn",
    ]
    assert [row[0] for row in rows] == names, output
    assert all(float(row[1]) > 0 and len(row) == 5 for row in rows), output
    assert child.lines[-1].startswith("goal: ours / bare req/s >= 0.97: asyncio "), (
        output
    )


@pytest.mark.subprocess
@pytest.mark.bench
def test_conn_memory_bench_prints_a_row_per_server_with_its_sites_and_the_goals() -> (
    None
):
    servers = ["bare-asyncio", "ours-asyncio", "ours-trio"]
    bench = (str(BENCH / "conn_memory.py"), "--conns", "20", "--top", "3")
    with Child(*bench, "--servers", *servers, timeout=120) as child:
        code = child.finish()
        output = child.output
    assert code == 0, output
    header = next(
        i for i, x in enumerate(child.lines) if x.split()[:2] == ["server", "rss-KB"]
    )
    rows = [line.split() for line in child.lines[header + 1 : header + 4]]
    assert [row[0] for row in rows] == servers, output
    # Every idle connection holds at least its socket; ours one task each.
    assert all(float(row[2]) > 0 for row in rows), output
    assert [row[5] for row in rows[1:]] == ["1.00", "1.00"], output
    tops = [x for x in child.lines if x.endswith("(bytes and blocks per connection)")]
    assert [top.split(":")[0] for top in tops] == servers, output
    goals = [line for line in child.lines if line.startswith("goal: ")]
    assert [goal.split()[1] for goal in goals] == ["ours-asyncio", "ours-trio"], output
