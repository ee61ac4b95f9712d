"""One generation of the child: its process, its notify socket, its state."""

from __future__ import annotations

import contextlib
import math
import os
import signal
from dataclasses import dataclass

from ._notify import NotifyInbox

__all__ = ["Generation", "exit_code_of"]


def exit_code_of(status: int) -> int:
    """A wait status as a shell reports it: the code, or 128 + the signal."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


@dataclass
class Generation:
    """A child started by the launcher; ``number`` counts from 1."""

    number: int
    pid: int
    inbox: NotifyInbox  # the launcher's end of its NOTIFY_SOCKET
    started_at: float
    ready: bool = False
    exit_code: int | None = None
    asked_to_stop: bool = False
    kill_at: float = math.inf
    group_gone: bool = False
    refusal_told: bool = False  # the supervisor's STATUS= said refusal()
    next_probe: float = 0.0  # --ready accepting: when to look in /proc again

    def __post_init__(self) -> None:
        self.inbox.started(f"generation {self.number}", self.pid)

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

    def read_notifications(self, *, count_ready: bool = True) -> list[list[str]]:
        """Take the notifications its main process sent (see ``NotifyInbox``):
        each datagram as its ``KEY=VALUE`` lines. ``READY=1`` makes it ready
        if ``count_ready``."""
        datagrams = self.inbox.receive()
        if count_ready and any("READY=1" in lines for lines in datagrams):
            self.ready = True
        return datagrams

    def refusal(self) -> str:
        """Why READY=1 went unheard, if a process other than the main one sent it."""
        if not self.inbox.ready_refused:
            return ""
        sender = self.inbox.refused_ready
        who = "an unknown process" if sender is None else f"pid {sender}"
        return (
            f"READY=1 from {who} was dropped: not its main process"
            f" (pid {self.inbox.main_pid}), see --notify-access"
        )

    def close(self) -> None:
        """Close our end; the socket file is the runtime directory's to remove."""
        self.inbox.close()


def describe_exit(code: int) -> str:
    """``exit code 3`` or ``killed by SIGKILL (exit code 137)``."""
    if code > 128:  # noqa: PLR2004 -- 128 + signal, the shell's convention
        try:
            name = signal.Signals(code - 128).name
        except ValueError:
            return f"exit code {code}"
        return f"{name} (exit code {code})"
    return f"exit code {code}"
