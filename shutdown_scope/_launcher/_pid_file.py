"""The launcher's pid file, and which pid ``shutdown-scope reload`` may signal.

A running launcher holds a POSIX write lock on its ``--pid-file`` for its whole
life, so ``reload --pid-file`` signals the pid that holds the lock (``F_GETLK``
names it), never a stale pid that now belongs to another process. ``reload
--pid`` signals only a process named ``shutdown-scope`` (``/proc/PID/comm``, set
by each launcher). Both pin the process with a pidfd before checking it, so a
pid reused in between is never signalled.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import fcntl
import os
import re
import signal
import stat
from collections.abc import Callable

__all__ = [
    "LAUNCHER_NAME",
    "PidFile",
    "name_this_process",
    "parse_pid",
    "signal_launcher",
]

# What /proc/PID/comm of a launcher says (the kernel keeps 15 bytes).
LAUNCHER_NAME = "shutdown-scope"
# pid_t's range: larger numbers would not even reach kill().
_PID_MAX = 2**31 - 1
_PID_TEXT = re.compile(rb"[0-9]{1,10}\n?")
_READ_LIMIT = 64


class _Flock(ctypes.Structure):
    """``struct flock``; off_t is 64-bit (Python builds with large-file support)."""

    _fields_ = (
        ("l_type", ctypes.c_short),
        ("l_whence", ctypes.c_short),
        ("l_start", ctypes.c_int64),
        ("l_len", ctypes.c_int64),
        ("l_pid", ctypes.c_int),
    )


def parse_pid(text: str) -> int:
    """``--pid``: a process id, 1 or more (0 and -1 would signal many processes)."""
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= _PID_MAX:
        msg = f"{text!r} is not a process id (a whole number from 1 to {_PID_MAX})"
        raise argparse.ArgumentTypeError(msg)
    return int(text)


def name_this_process() -> None:
    """Name the launcher ``shutdown-scope`` in /proc/PID/comm (and ``ps``)."""
    # No /proc: ``reload --pid`` cannot check. open(), not pathlib: this runs
    # before the first generation starts, and pathlib costs milliseconds there.
    with (
        contextlib.suppress(OSError),
        open("/proc/self/comm", "w", encoding="ascii") as comm,  # noqa: PTH123
    ):
        comm.write(LAUNCHER_NAME)


def _lock_holder(fd: int) -> int | None:
    """The pid holding a write lock on ``fd``'s file; None if nobody does.

    0 when the holder is in a PID namespace we cannot see. A read lock (anyone
    who may read the file can take one) is no launcher's: None.
    """
    query = _Flock(l_type=fcntl.F_WRLCK, l_whence=os.SEEK_SET)
    answer = _Flock.from_buffer_copy(fcntl.fcntl(fd, fcntl.F_GETLK, bytes(query)))
    return answer.l_pid if answer.l_type == fcntl.F_WRLCK else None


def _read_pid(fd: int) -> int | None:
    """The pid written in the file; None if it is empty; ValueError if not a pid."""
    content = os.pread(fd, _READ_LIMIT + 1, 0)
    if not content:
        return None
    if not _PID_TEXT.fullmatch(content) or int(content) == 0:
        msg = "it does not hold a pid"
        raise ValueError(msg)
    return int(content)


def _open_regular(path: str) -> int:
    """Open a regular file for reading, never through a symbolic link.

    Raises:
        OSError: the reason, as a short phrase.
    """
    kind = os.lstat(path).st_mode  # opening a device could do something
    if stat.S_ISLNK(kind):
        msg = "it is a symbolic link (not followed)"
        raise OSError(errno.ELOOP, msg)
    if stat.S_ISREG(kind):
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        if stat.S_ISREG(os.fstat(fd).st_mode):  # still, after the lstat
            return fd
        os.close(fd)
    msg = "it is not a regular file"
    raise OSError(errno.EINVAL, msg)


class PidFile:
    """``--pid-file``: our pid, written atomically and locked while we run.

    The pid is written to a new file beside ``path``, locked, then renamed over
    ``path``: readers never see a partial file, and a symbolic link planted at
    ``path`` is neither followed nor replaced (we refuse it).
    """

    def __init__(self, path: str) -> None:
        """Write and lock the pid file.

        Raises:
            OSError: it cannot be written, is a link or not a pid file, or another
                launcher holds it; the message says which.
        """
        self.path = path
        try:
            self._check_replaceable()
            self._fd, self._identity = self._write_locked()
        except (OSError, ValueError) as error:
            code = error.errno if isinstance(error, OSError) else errno.EINVAL
            why = error.strerror if isinstance(error, OSError) else str(error)
            msg = f"cannot write --pid-file {path}: {why or error}"
            raise OSError(code or errno.EINVAL, msg) from None

    def _check_replaceable(self) -> None:
        try:
            fd = _open_regular(self.path)
        except FileNotFoundError:
            return
        try:
            holder = _lock_holder(fd)
            if holder is not None:
                msg = f"a running launcher (pid {holder or '?'}) holds it"
                raise OSError(errno.EADDRINUSE, msg)
            _read_pid(fd)  # a stale pid file is replaced; any other file is not
        finally:
            os.close(fd)

    def _write_locked(self) -> tuple[int, tuple[int, int]]:
        # Only with --pid-file: they cost milliseconds before the first child starts.
        import tempfile
        from pathlib import Path

        final = Path(self.path).absolute()
        # O_EXCL | O_NOFOLLOW, mode 0600 until it holds our pid and our lock.
        fd, temporary = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.")
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(fd, f"{os.getpid()}\n".encode())
            os.fchmod(fd, 0o644)
            Path(temporary).rename(final)  # replaces a link, never follows one
        except BaseException:
            os.close(fd)
            Path(temporary).unlink(missing_ok=True)
            raise
        written = os.fstat(fd)
        return fd, (written.st_dev, written.st_ino)

    def release(self) -> None:
        """Remove the pid file if it is still ours (not replaced since); unlock it."""
        from pathlib import Path

        with contextlib.suppress(OSError):
            now = os.lstat(self.path)
            if (now.st_dev, now.st_ino) == self._identity:
                Path(self.path).unlink()
        os.close(self._fd)  # releases the lock, after the unlink


def _check_named_launcher(pid: int) -> None:
    from pathlib import Path  # for `reload --pid`: not the launcher's start

    if not Path("/proc/self/comm").exists():
        if pid == 1:  # no /proc to ask, and pid 1 is a system's init
            msg = "cannot tell whether pid 1 is a launcher (no /proc): not signalled"
            raise OSError(errno.EPERM, msg)
        return
    try:
        name = Path(f"/proc/{pid}/comm").read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        msg = f"cannot signal pid {pid}: {os.strerror(errno.ESRCH)}"
        raise OSError(errno.ESRCH, msg) from None
    if name.rstrip("\n") != LAUNCHER_NAME:
        msg = (
            f"pid {pid} is {name.strip()!r}, not a shutdown-scope launcher: "
            "not signalled"
        )
        raise OSError(errno.EPERM, msg)


def _check_holder(fd: int, path: str) -> int:
    """The pid in the pid file at ``fd``, if the process holding its lock is it."""
    try:
        pid = _read_pid(fd)
    except ValueError:
        pid = None
    if pid is None:
        msg = f"cannot read a pid from {path}: it does not hold a pid"
        raise OSError(errno.EINVAL, msg)
    holder = _lock_holder(fd)
    if holder is None:
        msg = f"stale pid file {path}: no launcher holds it (pid {pid} not signalled)"
        raise OSError(errno.ESRCH, msg)
    if holder != pid:
        seen = f"pid {holder}" if holder > 0 else "a process in another PID namespace"
        msg = f"--pid-file {path} names pid {pid}, but {seen} holds it: not signalled"
        raise OSError(errno.EPERM, msg)
    return pid


def _send_sighup(pid: int, verify: Callable[[], None]) -> None:
    """SIGHUP to ``pid`` if ``verify()`` passes while the process is pinned."""
    pidfd = -1
    try:
        with contextlib.suppress(AttributeError):  # no pidfd: os.kill after the check
            pidfd = os.pidfd_open(pid)
    except OSError as error:
        if error.errno != errno.ENOSYS:
            msg = f"cannot signal pid {pid}: {error.strerror}"
            raise OSError(error.errno, msg) from None
    try:
        verify()  # the pidfd's process is still this pid's, or the send fails
        if pidfd >= 0:
            signal.pidfd_send_signal(pidfd, signal.SIGHUP)
        else:
            os.kill(pid, signal.SIGHUP)
    except (ProcessLookupError, PermissionError) as error:
        msg = f"cannot signal pid {pid}: {error.strerror}"
        raise OSError(error.errno, msg) from None
    finally:
        if pidfd >= 0:
            os.close(pidfd)


def signal_launcher(*, pid: int | None = None, pid_file: str | None = None) -> int:
    """Send SIGHUP to the launcher at ``pid`` or holding ``pid_file``; its pid.

    Raises:
        OSError: no live launcher there (stale pid file, another process, ...);
            nothing was signalled. The message says why.
    """
    if pid_file is None:
        assert pid is not None
        _send_sighup(pid, lambda: _check_named_launcher(pid))
        return pid
    try:
        fd = _open_regular(pid_file)
    except OSError as error:
        msg = f"cannot read a pid from {pid_file}: {error.strerror or error}"
        raise OSError(error.errno, msg) from None
    try:
        found = _check_holder(fd, pid_file)

        def still_holds() -> None:
            _check_holder(fd, pid_file)

        _send_sighup(found, still_holds)
    finally:
        os.close(fd)
    return found
