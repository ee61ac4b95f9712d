"""bench/drain.py, run as a real process: its table and goals, never its timings."""

from __future__ import annotations

from pathlib import Path

import pytest
from _spawn import Child, printed_table

BENCH = str(Path(__file__).parent.parent / "bench" / "drain.py")

SERVERS = (
    "bare-asyncio",
    "ours-asyncio",
    "bare-trio",
    "ours-trio",
    "bare-uvicorn",
    "ours-uvicorn",
)


@pytest.mark.subprocess
@pytest.mark.bench
def test_drain_bench_quick_prints_a_row_per_server_and_the_goals() -> None:
    # Bare hypercorn's trio worker can hold its exit until --graceful-timeout
    # (10 s): the timeout leaves room for that.
    with Child(BENCH, "--quick", timeout=90) as child:
        code = child.finish()
        output = child.output
    assert code == 0, output
    rows = printed_table(child.lines, ["server", "req/s"], len(SERVERS))
    assert list(rows) == list(SERVERS), output
    assert all(int(row["answered"]) > 0 for row in rows.values()), output
    for name in ("ours-asyncio", "ours-trio", "ours-uvicorn"):
        assert rows[name]["lost"] == "0", output
        assert rows[name]["unanswered"] == "0", output
    goals = [line for line in child.lines if line.startswith("goal: ")]
    assert len(goals) == 4, output
    assert goals[0].startswith("goal: ours loses 0 requests in flight: asyncio met")
    assert "; trio met (0 lost, 0 unanswered)" in goals[0], output
    assert "; uvicorn met (0 lost, 0 unanswered)" in goals[0], output
    assert goals[1].startswith("goal: throughput ratio >= 0.97: asyncio "), output
    assert goals[2].startswith("goal: ours exits within 50 ms of the last answer:")
    h2_rows = printed_table(child.lines, ["server", "answered", "after-TERM"], 4)
    assert list(h2_rows) == [name for name in SERVERS if "uvicorn" not in name]
    for name in ("ours-asyncio", "ours-trio"):
        assert int(h2_rows[name]["answered"]) > 0, output
        assert h2_rows[name]["failed"] == "0", output
        assert h2_rows[name]["unanswered"] == "0", output
        assert h2_rows[name]["exit"] == "0", output
    assert goals[3] == (
        "goal: ours fails 0 HTTP/2 streams on SIGTERM: asyncio met (0 failed,"
        " 0 unanswered); trio met (0 failed, 0 unanswered)"
    ), output
