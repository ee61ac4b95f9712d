"""bench/workers.py, run as a real process: its tables, never its timings."""

from __future__ import annotations

from pathlib import Path

import pytest
from _spawn import Child

BENCH = str(Path(__file__).parent.parent / "bench" / "workers.py")
CLIENTS = 8  # --quick's


@pytest.mark.subprocess
@pytest.mark.bench
def test_workers_bench_quick_prints_each_table_for_launcher_and_a_peer() -> None:
    with Child(
        BENCH, "--quick", "--servers", "launcher,gunicorn", timeout=120
    ) as child:
        code = child.finish()
    assert code == 0, child.output
    rows = [
        line.split()
        for line in child.lines
        if line.split()[:1] in (["launcher"], ["gunicorn"])
    ]
    names = [row[0] for row in rows]
    assert names == ["launcher", "gunicorn"] * 3, child.output
    ours, peer, our_reloads, _, our_kill, peer_kill = rows
    # throughput: N=1, N=2, N=2/N=1, ours/it ("-" on our own row)
    assert len(ours) == len(peer) == 5, child.output
    assert all(float(x) > 0 for x in [*ours[1:4], *peer[1:5]]), child.output
    assert ours[4] == "-", child.output
    # reloads: answered, failed, lost, refused, not-200, ok/asked, slowest, window, exit
    assert int(our_reloads[1]) > 0, child.output
    assert our_reloads[2:6] == ["0", "0", "0", "0"], child.output
    assert our_reloads[6] == "1/1", child.output
    assert float(our_reloads[7]) > 0, child.output
    assert float(our_reloads[8]) > 0, child.output  # every reload's window ended
    assert our_reloads[9] == "0", child.output
    # kill -9: answered, failed, lost, refused, closed-idle, replaced-ms, exit;
    # only the requests in flight on the killed worker may fail; it is replaced.
    assert int(our_kill[2]) + int(our_kill[5]) <= CLIENTS, child.output
    assert our_kill[4] == "0", child.output
    assert float(our_kill[6]) > 0, child.output
    assert our_kill[7] == "0", child.output
    assert peer_kill[6] == "never" or float(peer_kill[6]) > 0, child.output
