"""The launcher's private directory, where the generations' notify sockets live.

Made fresh by ``mkdtemp`` (mode 0700, a name nobody can guess in advance) and
removed at exit. Before each socket is bound, the path is checked to still be
that directory, owned by us: a tmp cleaner may have removed it, and another user
may have made one of the same name since, to block every reload. Then a new
directory is made; the other is neither used nor touched.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import stat
import tempfile

__all__ = ["RuntimeDir"]

logger = logging.getLogger("shutdown_scope.launcher")

_MODE = 0o700


def _is_socket(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISSOCK(
            os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
        )
    except FileNotFoundError:
        return False


def _prefixes(path: str) -> list[str]:
    """``/``, ``/a``, ``/a/b`` for the absolute ``path`` ``/a/b``."""
    parts = path.split("/")
    return ["/".join(parts[:n]) or "/" for n in range(1, len(parts) + 1)]


def _changeable_by_others(path: str) -> str | None:
    """Who besides root and us could rename or replace an entry of ``path``.

    Each directory on the way, as written and as resolved, must belong to root
    or us and be writable by no one else (unless sticky, as /tmp): otherwise
    another user could move our directory away and take its place, and so
    block or hear the generations' notifications. None if nobody can.
    """
    real = os.path.realpath(path)  # what Path.resolve() does; pathlib costs ms here
    for prefix in [*_prefixes(path), *_prefixes(real)]:
        try:
            info = os.lstat(prefix)
        except OSError as error:
            return f"{prefix} cannot be examined: {error.strerror}"
        if info.st_uid not in {0, os.geteuid()}:
            return f"uid {info.st_uid} owns {prefix}"
        shared = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if stat.S_ISDIR(info.st_mode) and shared and not info.st_mode & stat.S_ISVTX:
            return f"{prefix} is writable by other users and not sticky"
    return None


class RuntimeDir:
    """Private directories for unix sockets; the last one made is in use."""

    def __init__(self) -> None:
        """Make the directory (in ``$TMPDIR``, else /tmp).

        Raises:
            OSError: it cannot be made.
        """
        self._made: list[tuple[str, int]] = []  # path, and an fd of the directory
        self._make()

    @property
    def path(self) -> str:
        """The directory in use."""
        return self._made[-1][0]

    def _make(self) -> None:
        try:
            parent = tempfile.gettempdir()
            unsafe = _changeable_by_others(parent)
            path = (
                None
                if unsafe
                else tempfile.mkdtemp(prefix="shutdown-scope-", dir=parent)
            )
        except OSError as error:
            msg = f"cannot make the launcher's runtime directory: {error}"
            raise OSError(error.errno, msg) from None
        if path is None:
            msg = (
                f"cannot make the launcher's runtime directory in {parent}: {unsafe};"
                " set TMPDIR to a directory only root and this user can change"
            )
            raise OSError(errno.EPERM, msg)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        os.fchmod(fd, _MODE)  # mkdtemp's 0700 less the umask: a umask 0700 leaves 0
        self._made.append((path, fd))

    @staticmethod
    def _intact(path: str, fd: int) -> bool:
        """``path`` is still our directory: same inode, our uid, mode 0700."""
        try:
            seen = os.lstat(path)
        except OSError:
            return False
        ours = os.fstat(fd)
        return (
            (seen.st_dev, seen.st_ino) == (ours.st_dev, ours.st_ino)
            and seen.st_uid == os.geteuid()
            and stat.S_IMODE(seen.st_mode) == _MODE
        )

    def bind_datagram(self, name: str) -> tuple[socket.socket, str]:
        """A datagram socket bound at ``name`` in our directory, and its path.

        Raises:
            OSError: it cannot be bound.
        """
        for _ in range(2):  # once more in a new directory if it was swapped
            path, fd = self._made[-1]
            if not self._intact(path, fd):
                self._make()
                logger.warning(
                    "the runtime directory %s is gone or no longer ours; now using %s",
                    path,
                    self.path,
                )
                path, fd = self._made[-1]
            sock_path = os.path.join(path, name)  # noqa: PTH118 -- no pathlib at the start
            sock = socket.socket(
                socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
            )
            try:
                sock.bind(sock_path)
            except BaseException:
                sock.close()
                raise
            # The bind went through ``path``: was that our directory, and is it now?
            if _is_socket(name, fd) and self._intact(path, fd):
                return sock, sock_path
            sock.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=fd)
        msg = f"the runtime directory {self.path} keeps being replaced"
        raise OSError(msg)

    def remove(self, sock_path: str) -> None:
        """Unlink a socket made by ``bind_datagram``: in our directory only."""
        directory, name = os.path.split(sock_path)
        for path, fd in self._made:
            if path == directory:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=fd)

    def close(self) -> None:
        """Remove each directory made, with what is left in it, where still ours."""
        for path, fd in self._made:
            with contextlib.suppress(OSError):
                if self._intact(path, fd):
                    for name in os.listdir(fd):  # noqa: PTH208 -- of the fd, not the path
                        os.unlink(name, dir_fd=fd)
                    os.rmdir(path)  # noqa: PTH106 -- no pathlib at the start
            os.close(fd)
        self._made.clear()
