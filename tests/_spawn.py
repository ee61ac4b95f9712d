"""Run a Python child process and read its output line by line, with one deadline.

The tests that use this send real signals at moments the child announces by
printing a marker: they never sleep to wait for a state. stdout and stderr are
merged into one pipe, so the order of the child's prints and log lines is kept.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import TracebackType

    from typing_extensions import Self

__all__ = ["TIMEOUT", "Child", "Launcher", "child_pids", "fill_queue"]

# Generous: two slow CI cores running coverage must never hit it; a hung child
# still fails its test well before pytest-timeout ends the whole run.
TIMEOUT = 30.0


class Child:
    """``sys.executable *argv`` with stdout+stderr read by a thread.

    Use as a context manager: on exit the child is killed if it still runs.
    """

    def __init__(
        self, *argv: str, timeout: float = TIMEOUT, env: dict[str, str] | None = None
    ) -> None:
        self._deadline = time.monotonic() + timeout
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._eof = False
        self.proc = subprocess.Popen(
            [sys.executable, *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=None if env is None else {**os.environ, **env},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._reader.join()
        assert self.proc.stdout is not None
        self.proc.stdout.close()

    @property
    def output(self) -> str:
        """Everything read so far."""
        return "\n".join(self.lines)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def _next_line(self, waiting_for: str) -> str | None:
        """The next line; None at the end of the output."""
        if self._eof:
            return None
        try:
            line = self._queue.get(timeout=max(0.0, self._deadline - time.monotonic()))
        except queue.Empty:
            msg = f"timed out waiting for {waiting_for}; output so far:\n{self.output}"
            raise AssertionError(msg) from None
        if line is None:
            self._eof = True
        else:
            self.lines.append(line)
        return line

    def wait_for(self, marker: str) -> str:
        """Read until a line contains ``marker``; return that line."""
        while True:
            line = self._next_line(repr(marker))
            if line is None:
                code = self.proc.wait()
                msg = (
                    f"the child exited with code {code} before printing {marker!r};"
                    f" output:\n{self.output}"
                )
                raise AssertionError(msg)
            if marker in line:
                return line

    def send(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the child."""
        os.kill(self.proc.pid, sig)

    def finish(self) -> int:
        """Read the rest of the output and return the exit code."""
        while self._next_line("the child to exit") is not None:
            pass
        try:
            return self.proc.wait(timeout=max(0.0, self._deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            msg = f"the child closed its output but did not exit:\n{self.output}"
            raise AssertionError(msg) from None

    def _find(self, fragment: str, start: int) -> int | None:
        return next(
            (i for i in range(start, len(self.lines)) if fragment in self.lines[i]),
            None,
        )

    def index(self, fragment: str) -> int:
        """The number of the first line containing ``fragment``."""
        found = self._find(fragment, 0)
        if found is None:
            msg = f"no line contains {fragment!r}; output:\n{self.output}"
            raise AssertionError(msg)
        return found

    def assert_in_order(self, *fragments: str) -> None:
        """Each fragment appears on a line after the previous one's."""
        at = -1
        for fragment in fragments:
            found = self._find(fragment, at + 1)
            if found is None:
                msg = f"{fragment!r} missing after line {at} of:\n{self.output}"
                raise AssertionError(msg)
            at = found


class Launcher(Child):
    """A ``shutdown-scope run`` child. On exit, the generations it has not seen
    exit are killed too: each is a process group of its own, and a failed test
    must not leave them holding the output pipe open."""

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        named = r"generation \d+(?: worker \d+)? \(pid (\d+)\)"
        started = re.findall(named, self.output)
        exited = re.findall(rf"{named} exited", self.output)
        pids = {int(pid) for pid in set(started) - set(exited)}
        if self.proc.poll() is None:  # and those whose lines were not read yet
            pids |= child_pids(self.proc.pid)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        super().__exit__(exc_type, exc, tb)


def child_pids(pid: int) -> set[int]:
    """The child processes of ``pid`` (Linux /proc; none where it cannot tell)."""
    found: set[int] = set()
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            found.update(int(x) for x in (task / "children").read_text().split())
    return found


def fill_queue(address: str | bytes) -> None:
    """Fill the queue of the datagram socket bound at ``address`` (a path, or
    an abstract name): the next message sent to it would block."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as filler:
        filler.connect(address)
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:
                filler.send(b"FILLER=1")


def printed_table(
    lines: list[str], header: list[str], rows: int
) -> dict[str, dict[str, str]]:
    """The ``rows`` rows a bench printed under the first line that begins with
    the words ``header``: each row's cells by column, rows by their first cell
    (in order). A row with a cell too many or too few raises ``ValueError``."""
    start = next(
        i for i, line in enumerate(lines) if line.split()[: len(header)] == header
    )
    columns = lines[start].split()
    table = (line.split() for line in lines[start + 1 : start + 1 + rows])
    return {row[0]: dict(zip(columns, row, strict=True)) for row in table}
