"""bench/reload.py's child processes: the launcher and the naive app.

``Proc`` is a child process whose output ``wait_for`` reads up to a line that
matches a pattern; ``Launcher`` also kills, on close, the generations it has not
seen exit. A server that does not start or stop raises ``BenchError``.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

from _child_process import OUTPUT_TIMEOUT, ChildProcess
from _netns import free_port_below_ephemeral

__all__ = [
    "APP_LISTENING",
    "COUNTS",
    "DRAIN_TIMEOUT",
    "EXIT_TIMEOUT",
    "LISTENING_ON",
    "START_TIMEOUT",
    "BenchError",
    "Launcher",
    "Proc",
    "app_argv",
    "port_below_ephemeral",
]

APP = Path(__file__).resolve().parent.parent / "examples" / "hypercorn_app.py"

# Far more than a 10 ms request needs: no generation has to cut one short.
DRAIN_TIMEOUT = 10.0
START_TIMEOUT = 30.0
# Past this, a process that has not exited after its SIGTERM is killed.
EXIT_TIMEOUT = DRAIN_TIMEOUT + 20.0

LISTENING_ON = re.compile(r"shutdown-scope: listening on 127\.0\.0\.1:(\d+) ")
APP_LISTENING = re.compile(r"^listening (http://\S+)$")
COUNTS = re.compile(r"lifespan: shutdown; /work requests: (\d+) read, (\d+) answered")
GENERATION = re.compile(r"generation \d+ \(pid (\d+)\)")
GENERATION_EXITED = re.compile(r"generation \d+ \(pid (\d+)\) exited")


class BenchError(Exception):
    """A server did not start or stop; the message says which, with its output."""

    def __init__(self, name: str, problem: str, lines: list[str]) -> None:
        output = "\n".join(f"  | {line}" for line in lines[-60:])
        super().__init__(f"{name} {problem}; its output (the end):\n{output}")


class Proc(ChildProcess):
    """A child process; a thread reads its stdout and stderr by line."""

    def __init__(self, name: str, argv: list[str]) -> None:
        self.name = name
        super().__init__(argv)

    def wait_for(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        """Read until a line matches ``pattern``; raise BenchError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.next_line(deadline)
            except TimeoutError:
                problem = (
                    f"printed no line matching {pattern.pattern!r} in {timeout:g} s"
                )
                raise BenchError(self.name, problem, self.lines) from None
            if line is None:
                problem = (
                    f"exited with code {self.proc.wait()} before printing a line"
                    f" matching {pattern.pattern!r}"
                )
                raise BenchError(self.name, problem, self.lines)
            found = pattern.search(line)
            if found:
                return found

    def stop(self) -> int:
        """SIGTERM the process and wait for it (killed after ``EXIT_TIMEOUT``)."""
        guard = threading.Timer(EXIT_TIMEOUT, self._kill)
        guard.start()
        try:
            self.proc.send_signal(signal.SIGTERM)
            code = self.proc.wait()
        finally:
            guard.cancel()
        self.wait_output()
        return code

    def counts(self) -> list[tuple[int, int]] | None:
        """Each app's ``(read, answered)``; None unless every started app printed it."""
        self.wait_output()
        """Each app's ``(read, answered)``; None unless every started app printed it."""
        self._eof.wait(OUTPUT_TIMEOUT)
        found = [COUNTS.search(line) for line in self.lines]
        counts = [(int(m[1]), int(m[2])) for m in found if m]
        started = sum(line == "lifespan: startup" for line in self.lines)
        return counts if len(counts) == started else None

    def close(self) -> None:
        """Kill the process if it still runs; reap it."""
        if self.proc.poll() is None:
            self._kill()
        self.proc.wait()
        self._reader.join(OUTPUT_TIMEOUT)
        assert self.proc.stdout is not None
        if not self._reader.is_alive():
            self.proc.stdout.close()


class Launcher(Proc):
    """The launcher; on close, the generations it has not seen exit are killed too
    (each is a process group of its own, and would hold the output pipe open)."""

    def close(self) -> None:
        """Kill the launcher if it still runs, and what is left of its generations."""
        if self.proc.poll() is None:
            self._kill()
        self.proc.wait()
        started = {m[1] for m in map(GENERATION.search, self.lines) if m}
        exited = {m[1] for m in map(GENERATION_EXITED.search, self.lines) if m}
        for pid in started - exited:
            with contextlib.suppress(OSError):
                os.killpg(int(pid), signal.SIGKILL)
        super().close()


def app_argv(backend: str) -> list[str]:
    """The app's command line, as both methods start it."""
    return [
        sys.executable,
        str(APP),
        "--backend",
        backend,
        "--drain-timeout",
        f"{DRAIN_TIMEOUT:g}",
    ]


def port_below_ephemeral() -> int:
    """A free TCP port on 127.0.0.1 below the ephemeral range (see the docstring)."""
    try:
        return free_port_below_ephemeral()
    except OSError as error:
        name, problem = "naive", f"found {error}"
        raise BenchError(name, problem, []) from None
