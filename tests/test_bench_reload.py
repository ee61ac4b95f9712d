"""bench/reload.py, run as a real process: its table and goals, never its timings."""

from __future__ import annotations

from pathlib import Path

import pytest
from _spawn import Child, printed_table

BENCH = str(Path(__file__).parent.parent / "bench" / "reload.py")

GOAL = "goal: 0 failed requests and no gap longer than the slowest request: "


@pytest.mark.subprocess
@pytest.mark.bench
def test_reload_bench_quick_prints_both_methods_and_the_goals() -> None:
    with Child(BENCH, "--quick", timeout=90) as child:
        code = child.finish()
        output = child.output
    assert code == 0, output
    rows = printed_table(child.lines, ["method", "reloads"], 2)
    assert list(rows) == ["launcher", "naive"], output
    for row in rows.values():
        assert row["reloads"] == "3/3", output
        assert int(row["answered"]) > 0, output
        assert row["unanswered"] == "0", output
        assert row["exit"] == "0", output
    launcher = rows["launcher"]
    failures = ("refused", "reset", "lost", "not-200")
    assert [launcher[name] for name in failures] == ["0"] * 4, output
    # A naive restart leaves the port closed while the new process starts.
    assert int(rows["naive"]["refused"]) > 0, output
    goals = [line for line in child.lines if line.startswith("goal: ")]
    assert len(goals) == 5, output
    assert goals[0].startswith(GOAL + "launcher "), output
    failed = "(0 failed: 0 refused, 0 reset, 0 lost, 0 not 200; 0 unanswered;"
    assert failed in goals[0], output
    assert goals[0].endswith("; 3/3 reloads done; exit codes 0)"), output
    assert goals[1].startswith(GOAL + "naive NOT MET ("), output
    h2_header = next(
        i
        for i, line in enumerate(child.lines)
        if line.split()[:4] == ["method", "reloads", "answered", "failed"]
    )
    h2_columns = child.lines[h2_header].split()
    h2_row = dict(zip(h2_columns, child.lines[h2_header + 1].split(), strict=True))
    assert h2_row["method"] == "launcher-h2", output
    assert int(h2_row["answered"]) > 0, output
    assert [h2_row[name] for name in ("failed", "refused", "unanswered")] == [
        "0"
    ] * 3, output
    assert goals[2] == (
        "goal: 0 failed HTTP/2 streams over every reload: launcher-h2 met (0 failed,"
        " 0 refused; 0 unanswered; 3/3 reloads done; exit code 0)"
    ), output
    # The other servers (--quick: one reload each), uvicorn-fd3 beside its baseline.
    server_rows = printed_table(child.lines, ["server", "reloads"], 3)
    assert list(server_rows) == ["serve-uvicorn", "uvicorn-fd3", "uvicorn-workers2"]
    for row in server_rows.values():
        assert row["reloads"] == "1/1", output
        assert int(row["answered"]) > 0, output
    for name in ("serve-uvicorn", "uvicorn-fd3"):
        assert server_rows[name]["failed"] == "0", output
    assert goals[3] == (
        "goal: 0 failed requests over every reload: serve-uvicorn met"
        " (0 failed; 1/1 reloads done)"
    ), output
    assert goals[4].startswith(
        "goal: every reload done, failed no more than uvicorn --workers 2's SIGHUP"
        " restart ("
    ), output
    assert goals[4].endswith("): uvicorn-fd3 met (0 failed; 1/1 reloads done)"), output
