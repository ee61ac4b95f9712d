"""When a generation that sends no ``READY=1`` is ready: ``run --ready MODE``.

``accepting`` reads Linux's /proc: a process of the generation is ready to accept
once it waits for connections on one of the handed listening sockets, whatever fd
number it holds it at (uvicorn duplicates fd 3). An event-loop server shows that
as the socket in one of its epoll sets (``tfd:`` lines of the epoll fd's fdinfo
name the target file's inode). A server that polls (``poll``, ``select``, Python's
``socketserver``) or blocks in ``accept`` shows it only while one of its threads
waits there: its current system call (/proc/PID/task/TID/syscall), and for
``poll``/``select`` the fd list it passed, read from its memory (the launcher is
its parent, so it may). Each look is bounded: so many processes, so many fds.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Collection, Iterator
from pathlib import Path

TYPE_CHECKING = False  # typing costs milliseconds at the launcher's start
if TYPE_CHECKING:
    from typing import Final

__all__ = ["PROBE_INTERVAL", "is_accepting", "socket_inodes"]

# How often a generation that is not ready yet is looked at under ``accepting``.
PROBE_INTERVAL: Final = 0.05
# The most processes (a generation's tree) and fds per process looked at in one
# probe: a fork bomb or a process with a million fds cannot stall the launcher.
_MOST_PROCESSES: Final = 64
_MOST_FDS: Final = 4096
# The most poll/select entries read from a process's memory.
_MOST_POLLED: Final = 1024

# System call numbers: (accept, accept4, poll, ppoll, select, pselect6).
_SYSCALLS: Final = {
    "x86_64": (43, 288, 7, 271, 23, 270),
    "aarch64": (202, 242, -1, 73, -1, 72),
}
_POLLFD: Final = struct.Struct("ihh")  # struct pollfd: fd, events, revents
_POLLIN: Final = 0x001


def socket_inodes(fds: Collection[int]) -> frozenset[int]:
    """The inodes of the sockets at ``fds`` (what /proc names ``socket:[N]``)."""
    return frozenset(os.fstat(fd).st_ino for fd in fds)


def is_accepting(pid: int, inodes: frozenset[int]) -> bool:
    """Whether ``pid`` or a descendant waits for connections on one of ``inodes``.

    False when it cannot tell (the process is gone, /proc is not there).
    """
    return any(_waits_on(p, inodes) for p in _tree(pid))


def _tree(pid: int) -> Iterator[int]:
    """``pid`` and its descendants (children of any of its threads), at most so many."""
    seen = 0
    todo = [pid]
    while todo and seen < _MOST_PROCESSES:
        current = todo.pop()
        seen += 1
        yield current
        with contextlib.suppress(OSError):
            for task in os.scandir(f"/proc/{current}/task"):
                children = Path(task.path, "children").read_text(encoding="ascii")
                todo.extend(int(x) for x in children.split())


def _fds(pid: int) -> dict[int, str]:
    """``pid``'s fds and what each links to (at most so many)."""
    found: dict[int, str] = {}
    with contextlib.suppress(OSError), os.scandir(f"/proc/{pid}/fd") as entries:
        for entry in entries:
            if len(found) >= _MOST_FDS:
                break
            with contextlib.suppress(OSError, ValueError):
                found[int(entry.name)] = str(Path(entry.path).readlink())
    return found


def _waits_on(pid: int, inodes: frozenset[int]) -> bool:
    fds = _fds(pid)
    ours = {fd for fd, link in fds.items() if _socket_inode(link) in inodes}
    if not ours:
        return False  # no copy of our sockets: nothing of it can accept from them
    for fd, link in fds.items():
        if link == "anon_inode:[eventpoll]" and _epoll_has(pid, fd, inodes):
            return True
    return _a_thread_waits(pid, ours)


def _socket_inode(link: str) -> int | None:
    if link.startswith("socket:[") and link.endswith("]"):
        with contextlib.suppress(ValueError):
            return int(link[len("socket:[") : -1])
    return None


def _epoll_has(pid: int, fd: int, inodes: frozenset[int]) -> bool:
    """Whether the epoll set at ``pid``'s ``fd`` watches one of ``inodes``."""
    try:
        text = Path(f"/proc/{pid}/fdinfo/{fd}").read_text(encoding="ascii")
    except (OSError, ValueError):
        return False
    # Lines such as "tfd: 5 events: 19 data: 5 pos:0 ino:3f3 sdev:8", in hex.
    for line in text.splitlines():
        if not line.startswith("tfd:"):
            continue
        for word in line.split():
            if word.startswith("ino:"):
                with contextlib.suppress(ValueError):
                    if int(word[4:], 16) in inodes:
                        return True
    return False


def _a_thread_waits(pid: int, fds: set[int]) -> bool:
    """Whether a thread of ``pid`` is in accept/poll/select on one of ``fds``."""
    numbers = _SYSCALLS.get(os.uname().machine)  # platform.machine(), unimported
    if numbers is None:
        return False  # no table for this architecture: epoll only
    accept, accept4, poll, ppoll, select, pselect6 = numbers
    with contextlib.suppress(OSError):
        for task in os.scandir(f"/proc/{pid}/task"):
            call = _syscall(task.path)
            if call is None:
                continue
            number, args = call
            if number in {accept, accept4} and args[0] in fds:
                return True
            if number in {poll, ppoll} and _polls(pid, args[0], args[1], fds):
                return True
            if number in {select, pselect6} and _selects(pid, args[1], args[0], fds):
                return True
    return False


def _syscall(task: str) -> tuple[int, list[int]] | None:
    """The system call a thread is blocked in, and its arguments."""
    try:
        words = Path(task, "syscall").read_text(encoding="ascii").split()
        # "NR arg1 ... arg6 sp pc" while in a call; "running" or "-1 sp pc" if not.
        return int(words[0]), [int(x, 16) for x in words[1:7]]
    except (OSError, ValueError, IndexError):
        return None


def _read_memory(pid: int, address: int, size: int) -> bytes:
    try:
        with Path(f"/proc/{pid}/mem").open("rb", buffering=0) as memory:
            memory.seek(address)
            return memory.read(size)
    except (OSError, ValueError, OverflowError):
        return b""


def _polls(pid: int, address: int, count: int, fds: set[int]) -> bool:
    count = min(count, _MOST_POLLED)
    data = _read_memory(pid, address, count * _POLLFD.size)
    for offset in range(0, len(data) - _POLLFD.size + 1, _POLLFD.size):
        fd, events, _ = _POLLFD.unpack_from(data, offset)
        if fd in fds and events & _POLLIN:
            return True
    return False


def _selects(pid: int, address: int, nfds: int, fds: set[int]) -> bool:
    if address == 0:
        return False  # no read set
    nfds = min(nfds, _MOST_POLLED)
    data = _read_memory(pid, address, (nfds + 7) // 8)
    # fd_set is an array of longs, little-endian on both architectures here.
    return any(
        fd < nfds and fd // 8 < len(data) and data[fd // 8] >> (fd % 8) & 1
        for fd in fds
    )
