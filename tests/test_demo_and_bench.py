"""The demo (a loaded server stopped by SIGTERM) and the bench, run as real processes.

Only their outcome is asserted, never their timings: those belong to the bench's
own output.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from _spawn import Child

ROOT = Path(__file__).parent.parent
DEMO = str(ROOT / "examples" / "demo.py")
BENCH = str(ROOT / "bench" / "core.py")

pytestmark = pytest.mark.subprocess


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_demo_loses_no_request(backend: str) -> None:
    argv = (DEMO, "--backend", backend, "--clients", "8", "--duration", "0.5")
    with Child(*argv) as child:
        code = child.finish()
        output = child.output
    assert code == 0, output
    summary = re.search(
        r"^(\d+) requests, (\d+) lost, exited in \d+ ms$", output, re.MULTILINE
    )
    assert summary, output
    assert int(summary[1]) > 0
    assert summary[2] == "0"
    assert "shutdown clean (exit code 0)" in output
    assert "server exit code 0" in output


@pytest.mark.bench
def test_bench_quick_prints_both_tables() -> None:
    with Child(BENCH, "--quick", timeout=90) as child:
        code = child.finish()
        output = child.output
    assert code == 0, output
    assert "in_flight enter+exit, ns per call" in output
    assert "SIGTERM to exit of an idle process, ms" in output
    rows = [line.split() for line in output.splitlines()]
    for backend in ("asyncio", "trio"):
        # One row per table: ns per call, then median / p90 in ms.
        in_flight_row, sigterm_row = [row for row in rows if row[:1] == [backend]]
        assert all(float(ns) > 0 for ns in in_flight_row[1:4]), output
        assert sigterm_row[2] == "/", output
        assert float(sigterm_row[1]) > 0, output
