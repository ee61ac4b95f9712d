"""``shutdown-scope dump --control PATH``: the serving generation dumps and goes on."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from _spawn import Launcher

pytestmark = pytest.mark.subprocess

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def dump(control: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shutdown_scope", "dump", "--control", str(control)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_dump_reaches_the_serving_scope_which_keeps_serving(tmp_path: Path) -> None:
    control = tmp_path / "control"
    command = [
        *("-m", "shutdown_scope", "run", "--listen", "127.0.0.1:0"),
        *("--control", str(control), "--"),
        *(sys.executable, "-m", "shutdown_scope", "serve", "work_app:app"),
        *("--app-dir", str(EXAMPLES)),
    ]
    with Launcher(*command) as child:
        line = child.wait_for("shutdown-scope: listening on 127.0.0.1:")
        port = re.search(r"127\.0\.0\.1:(\d+) ", line)
        assert port is not None, line
        child.wait_for(") ready")
        pid = int(re.findall(r"generation 1 \(pid (\d+)\)", child.output)[0])
        asked = dump(control)
        assert asked.returncode == 0, asked.stderr
        assert f"SIGUSR1 sent to pid {pid}" in asked.stderr
        # The scope's dump, from the serving process, without stopping it.
        child.wait_for(f"shutdown_scope dump (SIGUSR1), pid {pid}:")
        child.wait_for("  phase: RUNNING;")
        answer = httpx.get(f"http://127.0.0.1:{port[1]}/work?ms=1", timeout=10)
        assert answer.status_code == 200
        child.send(signal.SIGTERM)
        assert child.finish() == 0, child.output
    assert re.search(r"generation 1 \(pid \d+\) exited: exit code 0", child.output)


def test_dump_without_a_launcher_is_a_one_line_error(tmp_path: Path) -> None:
    asked = dump(tmp_path / "nothing-here")
    assert asked.returncode == 1
    assert asked.stderr.count("\n") == 1, asked.stderr
    assert "no launcher at --control" in asked.stderr
