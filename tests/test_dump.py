"""``graceful_scope(dump_signal=...)``: a dump on demand that stops nothing.

A real child process receives SIGUSR1 and keeps serving (tick lines go on
after the dump); then SIGTERM stops it cleanly.
"""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import pytest
from _spawn import Child

pytestmark = pytest.mark.subprocess

CHILD = str(Path(__file__).with_name("_dump_child.py"))


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_sigusr1_dumps_and_the_process_keeps_serving(backend: str) -> None:
    with Child(CHILD, backend) as child:
        child.wait_for("ready")
        child.send(signal.SIGUSR1)
        child.wait_for("shutdown_scope dump (SIGUSR1)")
        start = child.index("shutdown_scope dump (SIGUSR1)")
        tick = int(child.wait_for("tick ").split()[1])  # after the dump
        child.wait_for(f"tick {tick + 2}")  # still serving
        child.send(signal.SIGTERM)
        assert child.finish() == 0, child.output
    dump = child.output[start:]
    assert "phase: RUNNING" in dump
    assert re.search(r"in flight \(1\):\n\s+ticking_service: job 7: \d+\.\d{3} s", dump)
    tasks = dump.split("threads:")[0]
    assert "asyncio tasks (" in tasks or "trio task tree:" in tasks
    # The task tree shows where the service waits.
    assert re.search(r"_dump_child\.py:\d+ in ticking_service", tasks), tasks
    assert "'helper-thread'" in dump  # every thread's stack
    assert "in helper" in dump  # where it is
    report = json.loads(child.output.strip().splitlines()[-1])
    # The dump signal did not count as a shutdown signal.
    assert (report["trigger"], report["signals_received"]) == ("signal", 1)
    assert report["clean"] is True
