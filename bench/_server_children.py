"""The server child processes of bench/drain.py (and scale.py, throughput.py).

A ``Server`` is one of the four kinds drain.py compares, bare or ours, on a
worker (asyncio, trio, or uvicorn's), started as a child process on a free
port: a thread reads its output, ``wait_ready`` finds its address,
``signal_and_wait`` times its SIGTERM and exit, and ``counts`` reads the app's
own count of requests read and answered. ``cpu_seconds`` is the CPU time of a
process tree, from Linux's /proc.
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

__all__ = [
    "DRAIN_TIMEOUT",
    "EXAMPLES",
    "Server",
    "StartError",
    "cpu_seconds",
    "start_servers",
]

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
BARE_APP = EXAMPLES / "work_app.py"
OURS_APP = EXAMPLES / "hypercorn_app.py"
OURS_UVICORN_APP = EXAMPLES / "uvicorn_app.py"

# hypercorn's --graceful-timeout and our --drain-timeout: far more than the 5 ms
# requests need, so neither server has to cut one short.
DRAIN_TIMEOUT = 10.0
START_TIMEOUT = 30.0
# Past this, a server that has not exited after its SIGTERM is killed.
EXIT_TIMEOUT = DRAIN_TIMEOUT + 20.0

READY = {
    "bare": re.compile(r"[Rr]unning on (http://\S+)"),  # hypercorn's, uvicorn's
    "ours": re.compile(r"^listening (http://\S+)$"),
}
COUNTS = re.compile(r"lifespan: shutdown; /work requests: (\d+) read, (\d+) answered")


class StartError(Exception):
    """A server did not start; the message says which and includes its output."""

    def __init__(self, name: str, problem: str, lines: list[str]) -> None:
        output = "\n".join(f"  | {line}" for line in lines)
        super().__init__(f"{name} {problem}; its output:\n{output}")


class Server(ChildProcess):
    """One server child process; a thread reads its stdout and stderr by line."""

    def __init__(self, kind: str, worker: str, *, plain: bool = False) -> None:
        self.kind = kind
        self.worker = worker
        # Ours serves examples/work_app.py's app alone, as the bare servers do
        # (``--plain`` of the examples), not the examples' extra routes.
        self.plain = plain
        self.name = f"{kind}-{worker}"
        self.url = ""
        super().__init__(self._argv())

    def _argv(self) -> list[str]:
        argv = self._server_argv()
        return [*argv, "--plain"] if self.plain and self.kind == "ours" else argv

    def _server_argv(self) -> list[str]:
        if self.worker == "uvicorn":
            return self._uvicorn_argv()
        if self.kind == "bare":
            return [
                sys.executable,
                "-m",
                "hypercorn",
                "--worker-class",
                self.worker,
                "--bind",
                "127.0.0.1:0",
                "--graceful-timeout",
                f"{DRAIN_TIMEOUT:g}",
                f"{BARE_APP}:app",
            ]
        return [
            sys.executable,
            str(OURS_APP),
            "--bind",
            "127.0.0.1:0",
            "--backend",
            self.worker,
            "--drain-timeout",
            f"{DRAIN_TIMEOUT:g}",
        ]

    def _uvicorn_argv(self) -> list[str]:
        if self.kind == "bare":
            return [
                sys.executable,
                "-m",
                "uvicorn",
                "--app-dir",
                str(EXAMPLES),
                "--port",
                "0",
                "--no-access-log",
                "--timeout-graceful-shutdown",
                f"{DRAIN_TIMEOUT:.0f}",
                "work_app:app",
            ]
        return [
            sys.executable,
            str(OURS_UVICORN_APP),
            "--port",
            "0",
            "--drain-timeout",
            f"{DRAIN_TIMEOUT:g}",
        ]

    def wait_ready(self, deadline: float) -> None:
        """Read until the server prints its address; set ``url``."""
        while True:
            try:
                line = self.next_line(deadline)
            except TimeoutError:
                problem = f"printed no address in {START_TIMEOUT:g} s"
                raise StartError(self.name, problem, self.lines) from None
            if line is None:
                problem = f"exited with code {self.proc.wait()} before it was ready"
                raise StartError(self.name, problem, self.lines)
            found = READY[self.kind].search(line)
            if found:
                self.url = found[1]
                return

    @property
    def exit_code(self) -> int:
        """The exit code (once ``signal_and_wait`` has returned)."""
        return self.proc.returncode

    def signal_and_wait(self) -> tuple[float, float]:
        """SIGTERM the server; ``time.monotonic()`` of the signal and of the exit.

        ``Popen.wait()`` with a timeout polls (up to 50 ms late); without one it
        blocks in ``waitpid``, which is what is timed. A timer kills a server
        that has not exited after ``EXIT_TIMEOUT``.
        """
        guard = threading.Timer(EXIT_TIMEOUT, self._kill)
        guard.start()
        try:
            sent = time.monotonic()
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait()
            exited = time.monotonic()
        finally:
            guard.cancel()
        return sent, exited

    def counts(self) -> tuple[int, int] | None:
        """The app's ``(read, answered)`` from its lifespan shutdown line."""
        self.wait_output()
        for line in reversed(self.lines):
            found = COUNTS.search(line)
            if found:
                return int(found[1]), int(found[2])
        return None

    def close(self) -> None:
        """Kill the server if it still runs; reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._reader.join(OUTPUT_TIMEOUT)


def start_servers(stack: contextlib.ExitStack, workers: list[str]) -> list[Server]:
    """Start one server of each kind per worker, all at once; wait until ready."""
    servers = []
    for worker in workers:
        for kind in ("bare", "ours"):
            server = Server(kind, worker)
            stack.callback(server.close)
            servers.append(server)
    deadline = time.monotonic() + START_TIMEOUT
    for server in servers:
        server.wait_ready(deadline)
    return servers


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process and all its descendants (Linux /proc).

    The bare hypercorn CLI serves from a child process: its worker. None where
    /proc cannot tell.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    try:
        entries = list(Path("/proc").iterdir())
    except OSError:
        return None  # no /proc here
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            # After the command name in parentheses: state, ppid, ... utime, stime.
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / ticks
    if pid not in times:
        return None
    family, total = {pid}, 0.0
    for child in sorted(times):  # a parent's pid is smaller, barring wrap-around
        if child in family or parents[child] in family:
            family.add(child)
            total += times[child]
    return total
