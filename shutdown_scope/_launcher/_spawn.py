"""Start one generation of the child: its own process group, sockets at 3, 4, ...

``subprocess`` cannot do this: the child must learn its own pid for LISTEN_PID
(sd_listen_fds checks it) and receive the sockets at fixed numbers. So we fork
and exec ourselves, as subprocess does, and report an exec failure through a
close-on-exec pipe.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import signal
import sys
from collections.abc import Iterable, Mapping, Sequence

from ._sockets import FIRST_FD

__all__ = ["SpawnError", "spawn"]

_PR_SET_PDEATHSIG = 1
# The process's own symbols, libc among them (find_library would run programs).
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


class SpawnError(OSError):
    """The command could not be executed (not found, not executable, ...)."""


def _above(fd: int, floor: int) -> int:  # pragma: no cover -- in the child
    """``fd``, or a close-on-exec copy at ``floor`` or above if it sits lower."""
    return fd if fd >= floor else fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, floor)


def _place(fds: Sequence[int]) -> None:  # pragma: no cover -- in the child
    """Put ``fds[i]`` at ``FIRST_FD + i``, inheritable.

    An fd already inside the target range is first copied above it, so no
    ``dup2`` overwrites a socket still to be placed. (No fixed high floor for
    the sockets: the launcher must work under a small RLIMIT_NOFILE.)
    """
    floor = FIRST_FD + len(fds)
    clear = [_above(fd, floor) for fd in fds]
    for offset, fd in enumerate(clear):
        os.dup2(fd, FIRST_FD + offset)  # inheritable: survives the exec


def _exec_child(
    argv: Sequence[str],
    env: dict[str, str],
    fds: Sequence[int],
    reset_signals: Iterable[int],
    *,
    report_fd: int,
    parent: int,
) -> None:  # pragma: no cover -- runs in the forked child, until exec
    try:
        # Out of the way of the sockets' places first, so a failure is reported.
        report_fd = _above(report_fd, FIRST_FD + len(fds))
        signal.set_wakeup_fd(-1)  # the launcher's; the child must not write to it
        os.setpgid(0, 0)
        # Python ignores SIGPIPE and SIGXFSZ; a command expects the defaults.
        for sig in (*reset_signals, signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(sig, signal.SIG_DFL)
        if _LIBC is not None:
            # If the launcher dies (SIGKILL, OOM), the child is asked to stop.
            _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
            if os.getppid() != parent:
                os._exit(1)  # it died before that took effect
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        _place(fds)
        if fds:
            env["LISTEN_PID"] = str(os.getpid())
        os.execvpe(argv[0], list(argv), env)  # noqa: S606 -- running the command is the point
    except OSError as error:
        code = error.errno or errno.EINVAL
        os.write(report_fd, f"{code}".encode())
    except BaseException:  # noqa: BLE001 -- nothing may escape a forked child
        os.write(report_fd, f"{errno.EINVAL}".encode())
    finally:
        os._exit(127)


def spawn(
    argv: Sequence[str],
    env: Mapping[str, str],
    fds: Sequence[int],
    *,
    reset_signals: Iterable[int],
) -> int:
    """Fork, exec ``argv`` with ``fds`` at 3, 4, ...; return the child's pid.

    The child leads a new process group (its pid), has default handlers for
    ``reset_signals`` and no blocked signals. With ``fds``, LISTEN_PID is set to
    the child's own pid.

    Raises:
        SpawnError: the exec failed (the child was reaped); ``errno`` says why.
    """
    if not argv:
        msg = "no command to run"
        raise ValueError(msg)
    child_env = dict(env)
    signals = list(reset_signals)
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    parent = os.getpid()
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover -- the child
            os.close(read_end)
            _exec_child(
                argv, child_env, fds, signals, report_fd=write_end, parent=parent
            )
        os.close(write_end)
        write_end = -1
        # Also here, so no signal misses the new group. EACCES: the child has
        # already exec'd; ESRCH: it has already ended.
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)
        report = b""
        while chunk := os.read(read_end, 64):
            report += chunk
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)
    if report:
        os.waitpid(pid, 0)
        code = int(report) if report.isdigit() else errno.EINVAL
        raise SpawnError(code, f"cannot run {argv[0]!r}: {os.strerror(code)}")
    return pid
