"""The launcher's listening sockets: bound once, handed to every generation.

Each socket is kept at a file descriptor above the range a child receives them
in (3, 4, ...), close-on-exec, so the child's ``dup2`` to 3 + i never overwrites a
socket it has yet to receive.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import stat
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "FIRST_FD",
    "Listener",
    "adopt_inherited",
    "bind",
    "parse_address",
    "remove_stale_unix_socket",
]

# sd_listen_fds(3): passed file descriptors start at 3 (SD_LISTEN_FDS_START).
FIRST_FD = 3
# Kept out of the range 3 .. 3 + len(listeners) the children receive them in.
_HIGH_FD_FLOOR = 64


@dataclass(frozen=True)
class Listener:
    """A listening socket and how to describe it."""

    sock: socket.socket
    name: str
    address: str


def parse_address(text: str) -> tuple[int, str | tuple[str, int]]:
    """``host:port``, ``[v6]:port`` or ``unix:/path`` -> (family, address).

    Raises:
        ValueError: the text is none of those (the message shows the forms).
    """
    if text.startswith("unix:"):
        path = text[len("unix:") :]
        if not path:
            msg = f"--listen {text!r}: a unix socket needs a path: unix:/run/app.sock"
            raise ValueError(msg)
        return socket.AF_UNIX, path
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:  # noqa: PLR2004
        msg = (
            f"--listen {text!r}: expected HOST:PORT (127.0.0.1:8000, [::1]:8000, "
            f"0.0.0.0:8000) or unix:/path"
        )
        raise ValueError(msg)
    if host.startswith("[") and host.endswith("]"):
        return socket.AF_INET6, (host[1:-1], int(port_text))
    if ":" in host or not host:
        msg = f"--listen {text!r}: write an IPv6 host in brackets, as in [::1]:8000"
        raise ValueError(msg)
    return socket.AF_INET, (host, int(port_text))


def remove_stale_unix_socket(path: str) -> None:
    """Remove a socket file left by an earlier run; refuse one still in use.

    Raises:
        OSError: a process still listens at ``path`` (EADDRINUSE).
    """
    try:
        if not stat.S_ISSOCK(Path(path).stat().st_mode):
            return  # bind() will say what is wrong
    except FileNotFoundError:
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except OSError:
            Path(path).unlink(missing_ok=True)  # nobody listens: stale
            return
    raise OSError(errno.EADDRINUSE, "another process listens there")


def _keep_high(sock: socket.socket) -> socket.socket:
    """The same socket, moved to a close-on-exec fd at or above the floor."""
    high = fcntl.fcntl(sock.fileno(), fcntl.F_DUPFD_CLOEXEC, _HIGH_FD_FLOOR)
    family, kind = sock.family, sock.type
    sock.close()
    return socket.socket(family, kind, fileno=high)


def _describe(sock: socket.socket) -> str:
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return f"unix:{name.decode() if isinstance(name, bytes) else name}"
    if sock.family == socket.AF_INET6:
        return f"[{name[0]}]:{name[1]}"
    return f"{name[0]}:{name[1]}"


def bind(text: str, *, backlog: int) -> Listener:
    """Bind and listen on ``--listen`` address ``text``.

    Raises:
        ValueError: a malformed address.
        OSError: the address cannot be bound; the message names it.
    """
    family, address = parse_address(text)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if family == socket.AF_UNIX:
            assert isinstance(address, str)
            remove_stale_unix_socket(address)
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError as error:
        sock.close()
        msg = f"cannot listen on {text}: {error.strerror or error}"
        raise OSError(error.errno, msg) from None
    kept = _keep_high(sock)
    return Listener(kept, name=text, address=_describe(kept))


def adopt_inherited(environ: dict[str, str]) -> list[Listener]:
    """Sockets systemd passed to the launcher itself (LISTEN_FDS for our pid).

    They are taken out of ``environ`` so they are never passed on twice.

    Raises:
        ValueError: LISTEN_FDS, LISTEN_PID or LISTEN_FDNAMES is malformed.
    """
    count_text = environ.pop("LISTEN_FDS", None)
    pid_text = environ.pop("LISTEN_PID", None)
    names_text = environ.pop("LISTEN_FDNAMES", None)
    if count_text is None or pid_text is None:
        return []
    if not pid_text.isdigit():
        msg = f"LISTEN_PID={pid_text!r} is not a process id"
        raise ValueError(msg)
    if int(pid_text) != os.getpid():
        return []  # meant for another process
    if not count_text.isdigit():
        msg = f"LISTEN_FDS={count_text!r} is not a count of file descriptors"
        raise ValueError(msg)
    count = int(count_text)
    names = names_text.split(":") if names_text else ["unknown"] * count
    if len(names) != count:
        msg = f"LISTEN_FDNAMES={names_text!r} does not name {count} sockets"
        raise ValueError(msg)
    listeners = []
    for offset, name in enumerate(names):
        fd = FIRST_FD + offset
        try:
            is_socket = stat.S_ISSOCK(os.fstat(fd).st_mode)
        except OSError:
            is_socket = False
        if not is_socket:
            msg = f"LISTEN_FDS={count}: fd {fd} is not an open socket"
            raise ValueError(msg)
        kept = _keep_high(socket.socket(fileno=fd))
        listeners.append(Listener(kept, name=name, address=_describe(kept)))
    return listeners
