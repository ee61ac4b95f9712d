"""The launcher's log on a stderr nobody reads, or that is gone: never a stall.

Its stderr is a pipe (shrunk to one page) the test does not read; the launcher
is made to log a line per signal passed on, far more than the pipe holds. It
must still pass signals on and stop on SIGTERM, and its child's stderr must stay
in blocking mode (O_NONBLOCK is a property of the shared file description).
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

pytestmark = pytest.mark.subprocess

RECORDER = str(Path(__file__).with_name("_signal_recorder.py"))
TIMEOUT = 30.0
FLOOD = 300  # log lines of ~60 bytes: several times the pipe's 4 KiB


class Lines:
    """A pipe's lines, read by a thread; ``wait_for`` a marker with a deadline."""

    def __init__(self, fd: int) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._file = os.fdopen(fd, encoding="utf-8", errors="replace")
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        with self._file:
            for line in self._file:
                with self._cond:
                    self.lines.append(line.rstrip("\n"))
                    self._cond.notify_all()

    def wait_for(self, marker: str, count: int = 1) -> None:
        with self._cond:
            found = self._cond.wait_for(
                lambda: sum(x.count(marker) for x in self.lines) >= count, TIMEOUT
            )
        assert found, f"no {marker!r} x{count} in:\n" + "\n".join(self.lines[-20:])


def start(*options: str) -> tuple[subprocess.Popen[bytes], Lines, int]:
    """A launcher of the recorder; its stdout read, its stderr a pipe not read.

    Returns the process, its stdout's lines, and the read end of its stderr.
    """
    err_read, err_write = os.pipe()
    fcntl.fcntl(err_write, fcntl.F_SETPIPE_SZ, 4096)
    out_read, out_write = os.pipe()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "shutdown_scope",
            "run",
            "--debounce",
            "0",
            *options,
            "--",
            sys.executable,
            RECORDER,
        ],
        stdin=subprocess.DEVNULL,
        stdout=out_write,
        stderr=err_write,
    )
    os.close(out_write)
    os.close(err_write)
    return proc, Lines(out_read), err_read


def flood(proc: subprocess.Popen[bytes], out: Lines) -> None:
    """Make the launcher log FLOOD lines: real-time signals, each passed on.

    One at a time: Python runs a handler once for signals that arrive together.
    """
    for sent in range(1, FLOOD + 1):
        os.kill(proc.pid, signal.SIGRTMIN)
        out.wait_for(f"got {int(signal.SIGRTMIN)}", sent)


def test_a_full_stderr_pipe_never_stalls_the_launcher() -> None:
    proc, out, err_read = start()
    try:
        out.wait_for("ready")
        flood(proc, out)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=TIMEOUT) == 0
        out.wait_for("exiting")
        assert "stderr blocking True" in out.lines
    finally:
        proc.kill()
        proc.wait()
        os.close(err_read)


def test_lines_dropped_on_a_full_stderr_are_counted_once_it_drains() -> None:
    proc, out, err_read = start("--log-format", "json")
    try:
        out.wait_for("ready")
        flood(proc, out)
        err = Lines(err_read)  # stderr drains from now on
        os.kill(proc.pid, signal.SIGRTMIN + 1)  # one more line: the count follows
        err.wait_for('"log_lines_dropped"')
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=TIMEOUT) == 0
        err.wait_for('"exited"')
        events = [json.loads(line) for line in err.lines]
        dropped = [e for e in events if e.get("event") == "log_lines_dropped"]
        assert len(dropped) == 1
        forwarded = [e for e in events if e.get("event") == "signal_forwarded"]
        # Those written before the pipe filled, plus the dropped ones: all of them.
        assert len(forwarded) + dropped[0]["count"] == FLOOD + 2, events
    finally:
        proc.kill()
        proc.wait()


def test_a_stderr_nobody_will_ever_read_does_not_end_the_launcher() -> None:
    proc, out, err_read = start()
    os.close(err_read)  # each write now fails with EPIPE (SIGPIPE is ignored)
    try:
        out.wait_for("ready")
        flood(proc, out)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=TIMEOUT) == 0
    finally:
        proc.kill()
        proc.wait()
