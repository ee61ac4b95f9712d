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

_HIGH_FD_FLOOR = 64
_PR_SET_PDEATHSIG = 1
# The process's own symbols, libc among them (find_library would run programs).
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


class SpawnError(OSError):
    """The command could not be executed (not found, not executable, ...)."""


def _high_pipe() -> tuple[int, int]:
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    high = fcntl.fcntl(write_end, fcntl.F_DUPFD_CLOEXEC, _HIGH_FD_FLOOR)
    os.close(write_end)
    return read_end, high


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
        for offset, fd in enumerate(fds):
            os.dup2(fd, FIRST_FD + offset)  # inheritable: survives the exec
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
    floor = FIRST_FD + len(fds)
    if any(fd < floor for fd in fds):
        msg = f"sockets to pass must sit at fds >= {floor}, not {list(fds)}"
        raise ValueError(msg)
    child_env = dict(env)
    signals = list(reset_signals)
    read_end, write_end = _high_pipe()
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
