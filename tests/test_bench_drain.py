"""bench/drain.py, run as a real process: its table and goals, never its timings."""

from __future__ import annotations

from pathlib import Path

import pytest
from _spawn import Child

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
    header = next(
        i
        for i, line in enumerate(child.lines)
        if line.split()[:2] == ["server", "req/s"]
    )
    columns = child.lines[header].split()
    rows_end = header + 1 + len(SERVERS)
    table = [line.split() for line in child.lines[header + 1 : rows_end]]
    assert [row[0] for row in table] == list(SERVERS), output
    assert all(len(row) == len(columns) for row in table), output
    rows = {row[0]: dict(zip(columns, row, strict=True)) for row in table}
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
    h2_rows = _h2_table(child.lines)
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


def _h2_table(lines: list[str]) -> dict[str, dict[str, str]]:
    """The HTTP/2 table: its rows by server, each cell by column."""
    header = next(
        i
        for i, line in enumerate(lines)
        if line.split()[:3] == ["server", "answered", "after-TERM"]
    )
    columns = lines[header].split()
    table = [line.split() for line in lines[header + 1 : header + 5]]
    assert all(len(row) == len(columns) for row in table), lines
    return {row[0]: dict(zip(columns, row, strict=True)) for row in table}
