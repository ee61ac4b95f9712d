"""Run ``shutdown-scope run --log-format json`` and read its stderr as events.

The launcher's stderr is read apart from stdout: every line of it must be one
JSON object (a line that is not fails the test), kept in ``events``. stdout
carries the children's own prints (the markers tests wait for), in ``lines``.
The two pipes are read into one queue, so waiting for either reads both; the
order between a marker and an event is not known, only within each stream.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from typing import IO, TYPE_CHECKING, Any

from _spawn import TIMEOUT, Launcher, child_pids

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["EventLauncher", "launcher_command"]


def launcher_command(*options: str, command: list[str]) -> list[str]:
    """``-m shutdown_scope run --log-format json OPTIONS -- COMMAND``."""
    return [
        "-m",
        "shutdown_scope",
        "run",
        "--log-format",
        "json",
        *options,
        "--",
        *command,
    ]


class EventLauncher(Launcher):
    """A launcher child whose stderr is JSON events (see the module doc).

    ``argv`` must include ``--log-format json`` (``launcher_command``).
    """

    def __init__(
        self, *argv: str, timeout: float = TIMEOUT, env: dict[str, str] | None = None
    ) -> None:
        # Not Child.__init__: stdout and stderr are two pipes here.
        self._deadline = time.monotonic() + timeout
        self.lines: list[str] = []
        self.events: list[dict[str, Any]] = []
        self._taken: set[int] = set()  # events already returned by wait_event
        self._looked = 0  # stdout lines wait_for has looked at
        self._stream_queue: queue.Queue[tuple[str, str | None]] = queue.Queue()
        self._open = 2
        self._eof = False
        self.proc = subprocess.Popen(
            [sys.executable, *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=None if env is None else {**os.environ, **env},
        )
        assert self.proc.stdout is not None
        assert self.proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._read_stream, args=(name, f), daemon=True)
            for name, f in (("out", self.proc.stdout), ("err", self.proc.stderr))
        ]
        for reader in self._readers:
            reader.start()

    def _read_stream(self, name: str, stream: IO[str]) -> None:
        for line in stream:
            self._stream_queue.put((name, line.rstrip("\n")))
        self._stream_queue.put((name, None))

    def transcript(self) -> str:
        """stdout, then the events: for failure messages."""
        shown = "\n".join(json.dumps(e) for e in self.events)
        return f"{self.output}\n-- launcher events --\n{shown}"

    def _next_item(self, waiting_for: str) -> tuple[str, str] | None:
        """The next (stream, line) read; None once both pipes are closed."""
        while self._open:
            left = max(0.0, self._deadline - time.monotonic())
            try:
                name, line = self._stream_queue.get(timeout=left)
            except queue.Empty:
                msg = (
                    f"timed out waiting for {waiting_for}; so far:\n{self.transcript()}"
                )
                raise AssertionError(msg) from None
            if line is None:
                self._open -= 1
                continue
            if name == "out":
                self.lines.append(line)
                return name, line
            try:
                parsed = json.loads(line)
            except ValueError:
                parsed = None
            # Records without an event (warnings, errors) are JSON objects too.
            if not isinstance(parsed, dict) or "message" not in parsed:
                msg = f"launcher stderr line is not a JSON log record: {line!r}"
                raise AssertionError(msg)
            self.events.append(parsed)
            return name, line
        self._eof = True
        return None

    def _next_line(self, waiting_for: str) -> str | None:
        """The next stdout line (events read meanwhile are kept); None at the end."""
        while (item := self._next_item(waiting_for)) is not None:
            if item[0] == "out":
                return item[1]
        return None

    def wait_for(self, marker: str) -> str:
        """Read until a stdout line after those looked at before contains
        ``marker`` (it may have been read while waiting for an event)."""
        while True:
            for i in range(self._looked, len(self.lines)):
                if marker in self.lines[i]:
                    self._looked = i + 1
                    return self.lines[i]
            self._looked = len(self.lines)
            if self._next_item(repr(marker)) is None:
                code = self.proc.wait()
                msg = (
                    f"the launcher exited with code {code} before {marker!r};"
                    f" so far:\n{self.transcript()}"
                )
                raise AssertionError(msg)

    def wait_event(self, name: str, **fields: Any) -> dict[str, Any]:
        """The first event ``name`` with ``fields`` not returned before (it may
        have been read already); read on until it comes."""
        wanted = f"event {name} {fields}"
        at = 0
        while True:
            for i in range(at, len(self.events)):
                if i not in self._taken and matches(self.events[i], name, fields):
                    self._taken.add(i)
                    return self.events[i]
            at = len(self.events)
            if self._next_item(wanted) is None:
                code = self.proc.wait()
                msg = (
                    f"the launcher exited with code {code} before {wanted};"
                    f" so far:\n{self.transcript()}"
                )
                raise AssertionError(msg)

    def named(self, name: str, **fields: Any) -> list[dict[str, Any]]:
        """Every event ``name`` with ``fields`` read so far."""
        return [e for e in self.events if matches(e, name, fields)]

    def names(self) -> list[str]:
        """The names of the events read so far, in order."""
        return [e.get("event", "") for e in self.events]

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        started = {e["pid"] for e in self.named("generation_spawned") if "pid" in e}
        for e in self.named("generation_spawned"):
            started.update(e.get("pids", []))
        exited = {e["pid"] for e in self.named("child_exited")}
        pids = started - exited
        if self.proc.poll() is None:  # and those whose events were not read yet
            pids |= child_pids(self.proc.pid)
        for pid in pids:  # each generation is a process group of its own
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for reader in self._readers:
            reader.join()
        assert self.proc.stdout is not None
        assert self.proc.stderr is not None
        self.proc.stdout.close()
        self.proc.stderr.close()


def matches(found: dict[str, Any], name: str, fields: dict[str, Any]) -> bool:
    """``found`` is event ``name`` and has each of ``fields`` with its value."""
    return found.get("event") == name and all(
        k in found and found[k] == v for k, v in fields.items()
    )
