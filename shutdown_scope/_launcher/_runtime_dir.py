"""The launcher's private directory, where the generations' notify sockets live.

Made fresh (mode 0700, a name nobody can guess in advance) in the directory
``tempfile.gettempdir`` would pick, and removed at exit. (Not by ``tempfile``
itself: it and what it imports, shutil, random, bz2, lzma, cost milliseconds
before the first child starts.) Before each socket is bound, the path is
checked to still be that directory, owned by us: a tmp cleaner may have removed
it, and another user may have made one of the same name since, to block every
reload. Then a new directory is made; the other is neither used nor touched.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import stat

__all__ = ["RuntimeDir"]

logger = logging.getLogger("shutdown_scope.launcher")

_MODE = 0o700
_PREFIX = "shutdown-scope-"
_ATTEMPTS = 100  # names tried per directory (each taken one means a collision)


def _candidates() -> list[str]:
    """Where ``tempfile.gettempdir`` looks, in its order (POSIX)."""
    named = [os.environ.get(name) for name in ("TMPDIR", "TEMP", "TMP")]
    found = [name for name in named if name]
    found += ["/tmp", "/var/tmp", "/usr/tmp"]  # noqa: S108 -- tempfile's own list
    # A removed working directory is left out: nothing can be made in it, and
    # tempfile's stand-in, os.curdir, would fail here (abspath calls getcwd).
    with contextlib.suppress(OSError):
        found.append(os.getcwd())  # noqa: PTH109 -- no pathlib at the start
    return [os.path.abspath(path) for path in found]  # noqa: PTH100


def _make_private_dir() -> str:
    """A new directory of ours, mode 0700, in the first usable candidate.

    Raises:
        OSError: no candidate is usable, or the one to use is unsafe (EPERM).
    """
    candidates = _candidates()
    for parent in candidates:
        # As gettempdir, skip what we cannot write in (a file there is its test).
        if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):  # noqa: PTH112
            continue
        unsafe = _changeable_by_others(parent)
        if unsafe:
            msg = (
                f"cannot make the launcher's runtime directory in {parent}: {unsafe};"
                " set TMPDIR to a directory only root and this user can change"
            )
            raise OSError(errno.EPERM, msg)
        for _ in range(_ATTEMPTS):
            path = os.path.join(parent, _PREFIX + os.urandom(8).hex())  # noqa: PTH118
            try:
                os.mkdir(path, _MODE)  # noqa: PTH102 -- no pathlib at the start
            except FileExistsError:
                continue  # taken (by chance, or planted): another name
            except OSError:
                break  # not usable after all (read-only, ...): the next one
            return path
    msg = f"no usable temporary directory in {candidates}"
    raise FileNotFoundError(errno.ENOENT, msg)


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
            path = _make_private_dir()
        except OSError as error:
            if error.errno == errno.EPERM:
                raise
            msg = f"cannot make the launcher's runtime directory: {error.strerror}"
            raise OSError(error.errno, msg) from None
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        os.fchmod(fd, _MODE)  # mkdir's 0700 less the umask: a umask 0700 leaves 0
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
