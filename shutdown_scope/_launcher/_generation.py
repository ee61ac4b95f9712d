"""One generation of the child: its process, its notify socket, its state."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
from dataclasses import dataclass

__all__ = ["Generation", "exit_code_of"]

_STATUS_LIMIT = 200


def exit_code_of(status: int) -> int:
    """A wait status as a shell reports it: the code, or 128 + the signal."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


@dataclass
class Generation:
    """A child started by the launcher; ``number`` counts from 1."""

    number: int
    pid: int
    notify: socket.socket  # the launcher's end of its NOTIFY_SOCKET
    notify_path: str
    started_at: float
    ready: bool = False
    exit_code: int | None = None
    asked_to_stop: bool = False
    kill_at: float = math.inf
    group_gone: bool = False
    status: str = ""

    def __str__(self) -> str:
        return f"generation {self.number} (pid {self.pid})"

    @property
    def alive(self) -> bool:
        """The leader runs, or other processes of its group still do."""
        if self.exit_code is None:
            return True
        if self.group_gone:
            return False
        try:
            os.killpg(self.pid, 0)
        except ProcessLookupError:
            # Never checked again: the pid may be reused once the group is empty.
            self.group_gone = True
            return False
        except PermissionError:
            return True
        return True

    def signal_group(self, sig: int) -> None:
        """Send ``sig`` to the generation's process group (or its pid)."""
        if not self.alive:
            return
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            if self.exit_code is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, sig)

    def read_notifications(self) -> list[str]:
        """Take the sd_notify datagrams waiting on the socket, as KEY=VALUE lines."""
        lines: list[str] = []
        while True:
            try:
                data = self.notify.recv(4096)
            except (BlockingIOError, InterruptedError):
                return lines
            except OSError:
                return lines
            for line in data.decode("utf-8", "replace").splitlines():
                if "=" not in line:
                    continue
                lines.append(line)
                if line == "READY=1":
                    self.ready = True
                elif line.startswith("STATUS="):
                    self.status = line[len("STATUS=") :][:_STATUS_LIMIT]

    def close(self) -> None:
        """Close our end; the socket file is the runtime directory's to remove."""
        self.notify.close()


def describe_exit(code: int) -> str:
    """``exit code 3`` or ``killed by SIGKILL (exit code 137)``."""
    if code > 128:  # noqa: PLR2004 -- 128 + signal, the shell's convention
        try:
            name = signal.Signals(code - 128).name
        except ValueError:
            return f"exit code {code}"
        return f"{name} (exit code {code})"
    return f"exit code {code}"
