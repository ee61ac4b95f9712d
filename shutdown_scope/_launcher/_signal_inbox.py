"""The launcher's signals, caught from its first milliseconds on.

As PID 1, a signal with no handler is dropped by the kernel; anywhere else, a
SIGTERM before the handlers exist kills the launcher with the default action.
So ``shutdown-scope run`` opens this inbox before it imports or parses anything
else: the handlers do nothing but let Python write each signal's number to a
pipe (``signal.set_wakeup_fd``), and the supervisor's loop reads them from it
later, in order. This module imports only what a bare interpreter has loaded,
plus ``signal``.
"""

from __future__ import annotations

import os
import signal

TYPE_CHECKING = False  # typing itself costs milliseconds here
if TYPE_CHECKING:
    from types import FrameType, TracebackType

    from typing_extensions import Self

__all__ = ["FORWARDED", "HANDLED", "PASSED_ON", "SignalInbox"]

# Signals the launcher forwards to its children; SIGHUP means reload.
FORWARDED = (
    signal.SIGABRT,  # systemd's watchdog signal: the hung child must get it
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGWINCH,
)
# Every other catchable signal whose default action would end (or, TTIN and
# TTOU, stop) the launcher: passed on as it is, as tini and dumb-init do, so a
# stray one cannot orphan the generation and its sockets. Left out: PIPE and
# XFSZ, which Python ignores (the write fails with an error instead, and it is
# the launcher's own); the faults (SEGV, BUS, ILL, FPE, TRAP, SYS), synchronous,
# left to their defaults; KILL and STOP (uncatchable); TSTP and CONT (job control
# of the launcher itself); URG and WINCH-like signals that are ignored anyway.
_NOT_PASSED_ON = frozenset(
    int(sig)
    for sig in (
        *FORWARDED,
        signal.SIGHUP,
        signal.SIGCHLD,
        signal.SIGKILL,
        signal.SIGSTOP,
        signal.SIGPIPE,
        signal.SIGXFSZ,
        signal.SIGSEGV,
        signal.SIGBUS,
        signal.SIGILL,
        signal.SIGFPE,
        signal.SIGTRAP,
        signal.SIGSYS,
        signal.SIGTSTP,
        signal.SIGCONT,
        signal.SIGURG,
    )
)
# By number, not by name: Python 3.10 has no name for SIGSTKFLT, for one.
PASSED_ON: tuple[int, ...] = tuple(
    sorted(int(sig) for sig in signal.valid_signals() if sig not in _NOT_PASSED_ON)
)
# Every signal the inbox catches; a child gets their defaults back.
HANDLED = (*FORWARDED, *PASSED_ON, signal.SIGHUP, signal.SIGCHLD)
_CHUNK = 4096


def _ignore(signum: int, frame: FrameType | None) -> None:
    """Set as the Python handler so the wakeup fd is written; the loop does the work."""


class SignalInbox:
    """Catches ``HANDLED`` until closed; ``take()`` returns what arrived.

    Use as a context manager (main thread only): on exit the previous handlers
    and wakeup fd are back, and the pipe is closed.
    """

    def __init__(self) -> None:
        self._read, self._write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._previous_fd = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        self._previous = {sig: signal.signal(sig, _ignore) for sig in HANDLED}

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for sig, handler in self._previous.items():
            if handler is not None:  # None: set outside Python, cannot be restored
                signal.signal(sig, handler)
        signal.set_wakeup_fd(self._previous_fd)
        os.close(self._read)
        os.close(self._write)

    @property
    def fds(self) -> tuple[int, int]:
        """The pipe's two fds (opened before the launcher looks at LISTEN_FDS)."""
        return self._read, self._write

    def fileno(self) -> int:
        """The pipe's read end: readable once a signal is waiting."""
        return self._read

    def take(self) -> list[int]:
        """The numbers of the signals that arrived since the last call, in order."""
        data = b""
        while True:
            try:
                chunk = os.read(self._read, _CHUNK)
            except (BlockingIOError, InterruptedError):
                break
            data += chunk
            if len(chunk) < _CHUNK:
                break
        return list(data)
