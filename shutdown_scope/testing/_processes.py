"""The processes of a rehearsal: ports, children, and killing what is left."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from pathlib import Path

__all__ = ["alive", "children", "free_port", "kill_tree", "read_text"]


def free_port() -> int:
    """A TCP port of 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def children(pid: int) -> set[int]:
    """The child processes of ``pid`` (Linux ``/proc``; none where it cannot tell)."""
    found: set[int] = set()
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found.update(int(x) for x in (task / "children").read_text().split())
    return found


def alive(pid: int) -> bool:
    """``pid`` runs: it exists and is not a zombie waiting to be reaped (Linux)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # "pid (comm) S ...": comm may hold spaces and parentheses; the state follows
    # the last ")".
    return stat[stat.rindex(")") + 2 :][:1] not in {"Z", "X", ""}


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid``'s process group and that of each of its descendants.

    A launcher puts each generation in a process group of its own, so killing
    the launcher's group alone would leave them running.
    """
    groups: set[int] = set()
    pending = [pid]
    while pending:
        current = pending.pop()
        with contextlib.suppress(OSError):
            groups.add(os.getpgid(current))
        pending.extend(children(current))
    groups.discard(os.getpgid(0))  # never our own
    for group in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)


def read_text(path: Path) -> str:
    """A file the server writes to, read through a description of our own."""
    try:
        return path.read_bytes().decode(errors="replace")
    except FileNotFoundError:
        return ""
