"""A bench's child process whose output a thread reads, line by line.

The base of bench/_server_children.py's ``Server`` and bench/_reload_children.py's
``Proc``: stdout and stderr merged into one pipe, each line kept in ``lines``
and handed out by ``next_line`` as it comes.
"""

from __future__ import annotations

import queue
import subprocess
import threading
import time

__all__ = ["OUTPUT_TIMEOUT", "ChildProcess"]

# After its process has exited, how long to wait for the rest of its output (a
# grandchild, such as multiprocessing's resource tracker, may hold the pipe).
OUTPUT_TIMEOUT = 5.0


class ChildProcess:
    """A child process; a thread reads its stdout and stderr by line."""

    def __init__(self, argv: list[str]) -> None:
        self.killed = False
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._eof = threading.Event()
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.rstrip("\n")
            self.lines.append(line)
            self._queue.put(line)
        self._queue.put(None)
        self._eof.set()

    def next_line(self, deadline: float) -> str | None:
        """The next line; None once the output has ended.

        Raises:
            TimeoutError: no line came by ``deadline`` (``time.monotonic()``).
        """
        try:
            line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise TimeoutError from None
        if line is None:
            self._queue.put(None)  # the next call sees the end too
        return line

    def wait_output(self) -> None:
        """Wait for the end of the output, ``OUTPUT_TIMEOUT`` at the most."""
        self._eof.wait(OUTPUT_TIMEOUT)

    def _kill(self) -> None:
        self.killed = True
        self.proc.kill()
