"""A unix socket's file, removed at the end only if it is still the one we bound.

A successor may bind a new socket at the same path while we drain (after
removing ours, or renaming its own over it); removing the path then would cut
the successor off from every new client. So the file is known by its device and
inode, taken right after ``bind()``, and compared with the path's before
unlinking. Synchronous and free of anyio: the launcher and ``serve_tcp`` share it.
"""

from __future__ import annotations

import contextlib
import os

__all__ = ["BoundPath", "is_abstract"]


def is_abstract(address: str | bytes) -> bool:
    """An address in Linux's abstract namespace (leading NUL): it has no file."""
    return bool(address) and address[0] in {"\0", 0}


class BoundPath:
    """The socket file at ``path`` as it was just after we bound it.

    A plain class (the launcher makes one before its first generation starts,
    and ``dataclasses`` costs milliseconds of that start); never changed.
    """

    __slots__ = ("device", "inode", "path")

    def __init__(self, path: str, device: int, inode: int) -> None:
        self.path = path
        self.device = device
        self.inode = inode

    def __repr__(self) -> str:
        return f"BoundPath({self.path!r}, device={self.device}, inode={self.inode})"

    @classmethod
    def of(cls, path: str) -> BoundPath:
        """Remember the file now at ``path`` (call right after ``bind()``).

        Raises:
            OSError: ``path`` cannot be examined (it is gone already).
        """
        info = os.lstat(path)
        return cls(path, info.st_dev, info.st_ino)

    def still_ours(self) -> bool:
        """The path still names the file we bound, not a successor's."""
        try:
            info = os.lstat(self.path)
        except OSError:
            return False
        return (info.st_dev, info.st_ino) == (self.device, self.inode)

    def unlink_if_ours(self) -> bool:
        """Remove the path if it is still our socket file; True if removed.

        A successor that replaces the file between the check and the unlink
        (microseconds) still loses it: no system call compares and removes at once.
        """
        if not self.still_ours():
            return False
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # noqa: PTH108 -- no pathlib at the launcher's start
            return True
        return False
