"""One generation of the child: its worker processes, each with its notify socket.

Without ``--workers``, a generation is one process, named ``generation N (pid
P)`` as it always was; with it, N worker processes named ``generation N worker I
(pid P)``. Each worker leads a process group of its own and has its own
NOTIFY_SOCKET, where only its main process may speak. (Plain classes, not
dataclasses: the first is made before the launcher has imported its loop, and
``dataclasses`` alone costs milliseconds of that start.)
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal

from ._notify import NotifyInbox

__all__ = ["Generation", "Worker", "describe_exit", "exit_code_of"]

logger = logging.getLogger("shutdown_scope.launcher")


def exit_code_of(status: int) -> int:
    """A wait status as a shell reports it: the code, or 128 + the signal."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


class Worker:
    """A process started by the launcher: one of its generation's workers.

    ``index`` is None for the one process of a run without ``--workers``.
    """

    def __init__(
        self,
        generation: int,
        index: int | None,
        pid: int,
        inbox: NotifyInbox,
        *,
        started_at: float,
    ) -> None:
        self.generation = generation
        self.index = index
        self.pid = pid
        self.inbox = inbox  # the launcher's end of its NOTIFY_SOCKET
        self.started_at = started_at
        self.ready = False
        self.exit_code: int | None = None
        self.asked_to_stop = False
        self.kill_at = math.inf
        self.group_gone = False
        self.refusal_told = False  # the supervisor's STATUS= said refusal()
        self.next_probe = 0.0  # --ready accepting: when to look in /proc again
        inbox.started(self.name, pid)

    @property
    def name(self) -> str:
        """``generation N`` or ``generation N worker I``."""
        if self.index is None:
            return f"generation {self.generation}"
        return f"generation {self.generation} worker {self.index}"

    def __str__(self) -> str:
        return f"{self.name} (pid {self.pid})"

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
        """Send ``sig`` to the worker's process group (or its pid)."""
        if not self.alive:
            return
        try:
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                if self.exit_code is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.pid, sig)
        except PermissionError:
            # Every process of the group now runs as another user (a setuid
            # program, sudo): the launcher can neither stop nor kill them.
            left = "" if self.exit_code is None else "; not waited for"
            logger.warning(
                "cannot send signal %d to %s's process group: its processes run"
                " as another user%s",
                sig,
                self,
                left,
            )
            # A group we cannot signal would be waited for forever.
            self.group_gone = self.exit_code is not None

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

    def outcome(self) -> str:
        """``worker 1 (pid P): ready`` and the like, for a reload's answer."""
        if self.exit_code is not None:
            state = f"exited: {describe_exit(self.exit_code)}"
        else:
            state = "ready" if self.ready else "not ready"
        who = "" if self.index is None else f"worker {self.index} "
        return f"{who}(pid {self.pid}): {state}"

    def close(self) -> None:
        """Close our end; the socket file is the runtime directory's to remove."""
        self.inbox.close()


class Generation:
    """The workers started together by one start or reload; ``number`` counts from 1.

    ``workers[i]`` is worker i's latest process (a replacement takes its place).
    """

    def __init__(self, number: int, started_at: float, *, size: int = 1) -> None:
        self.number = number
        self.started_at = started_at
        self.workers: list[Worker] = []
        self.size = size
        self.told_ready = False  # its readiness was logged and passed on

    def __str__(self) -> str:
        if len(self.workers) == 1 and self.workers[0].index is None:
            return str(self.workers[0])
        pids = ", ".join(str(w.pid) for w in self.workers)
        return f"generation {self.number} (pids {pids})"

    @property
    def ready(self) -> bool:
        """Every worker has started and is ready (and still runs)."""
        return len(self.workers) == self.size and all(
            w.ready and w.exit_code is None for w in self.workers
        )

    def outcomes(self) -> str:
        """Each worker's state: ``worker 0 (pid P): ready, worker 1 ...``."""
        return ", ".join(w.outcome() for w in self.workers)


def describe_exit(code: int) -> str:
    """``exit code 3`` or ``SIGKILL (exit code 137)``."""
    if code > 128:  # noqa: PLR2004 -- 128 + signal, the shell's convention
        try:
            name = signal.Signals(code - 128).name
        except ValueError:
            return f"exit code {code}"
        return f"{name} (exit code {code})"
    return f"exit code {code}"
