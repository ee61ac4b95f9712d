"""The launcher's listening sockets: bound or adopted once, passed to every generation.

They are close-on-exec in the launcher; ``spawn`` places them at 3, 4, ... in
each child, wherever they sit here.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
import sys
from collections.abc import Collection

from shutdown_scope._socket_activation import (
    LISTEN_VARIABLES,
    SD_LISTEN_FDS_START,
    passed_fds,
)
from shutdown_scope._unix_paths import BoundPath, is_abstract

__all__ = [
    "FIRST_FD",
    "Listener",
    "adopt_inherited",
    "bind",
    "parse_address",
    "remove_stale_unix_socket",
]

# sd_listen_fds(3): passed file descriptors start at 3 (SD_LISTEN_FDS_START).
FIRST_FD = SD_LISTEN_FDS_START
_MAX_PORT = 65535
_FORMS = "HOST:PORT (127.0.0.1:8000, [::1]:8000, 0.0.0.0:8000), unix:PATH, unix:@NAME"


class Listener:
    """A listening socket, how to describe it, and the file to remove at the end.

    A plain class: made before the first generation starts, where ``dataclasses``
    would cost milliseconds of the launcher's start. Never changed.
    """

    __slots__ = ("address", "bound_path", "name", "sock")

    def __init__(
        self,
        sock: socket.socket,
        *,
        name: str,
        address: str,
        bound_path: BoundPath | None = None,  # a unix socket file we created
    ) -> None:
        self.sock = sock
        self.name = name
        self.address = address
        self.bound_path = bound_path

    def __repr__(self) -> str:
        return (
            f"Listener({self.address!r}, name={self.name!r}, fd={self.sock.fileno()})"
        )


def _port(text: str, port_text: str) -> int:
    # ASCII digits only: int() and str.isdigit() take other scripts' digits too.
    if not (port_text.isascii() and port_text.isdigit() and len(port_text) <= 5):  # noqa: PLR2004
        msg = f"--listen {text!r}: expected {_FORMS}"
        raise ValueError(msg)
    port = int(port_text)
    if port > _MAX_PORT:
        msg = f"--listen {text!r}: a port is 0 to {_MAX_PORT} (0 picks a free one)"
        raise ValueError(msg)
    return port


def _unix_address(text: str) -> str:
    path = text[len("unix:") :]
    if not path.startswith("@"):
        if not path:
            msg = f"--listen {text!r}: a unix socket needs a path: unix:/run/app.sock"
            raise ValueError(msg)
        return path
    if not sys.platform.startswith("linux"):
        msg = f"--listen {text!r}: abstract sockets (unix:@name) exist only on Linux"
        raise ValueError(msg)
    if len(path) == 1:
        msg = f"--listen {text!r}: an abstract socket needs a name: unix:@app"
        raise ValueError(msg)
    return "\0" + path[1:]  # Linux's abstract namespace: no file


def parse_address(text: str) -> tuple[int, str | tuple[str, int]]:
    """``host:port``, ``[v6]:port``, ``unix:PATH``, ``unix:@NAME`` -> (family, address).

    Raises:
        ValueError: the text is none of those (the message shows the forms).
    """
    if text.startswith("unix:"):
        return socket.AF_UNIX, _unix_address(text)
    host, sep, port_text = text.rpartition(":")
    if not sep:
        msg = f"--listen {text!r}: expected {_FORMS}"
        raise ValueError(msg)
    port = _port(text, port_text)
    if host.startswith("[") and host.endswith("]"):
        host, family = host[1:-1], socket.AF_INET6
    elif ":" in host:
        msg = f"--listen {text!r}: write an IPv6 host in brackets, as in [::1]:8000"
        raise ValueError(msg)
    else:
        family = socket.AF_INET
    if not host:
        msg = (
            f"--listen {text!r}: name the host: 0.0.0.0:{port} or [::]:{port} for"
            f" every interface, 127.0.0.1:{port} for this machine only"
        )
        raise ValueError(msg)
    return family, (host, port)


def remove_stale_unix_socket(path: str) -> None:
    """Remove a socket file left by an earlier run; refuse one still in use.

    Raises:
        OSError: a process still listens at ``path`` (EADDRINUSE).
    """
    try:
        # os, not pathlib: pathlib costs milliseconds of the launcher's start.
        if not stat.S_ISSOCK(os.stat(path).st_mode):  # noqa: PTH116
            return  # bind() will say what is wrong
    except FileNotFoundError:
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except OSError:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # noqa: PTH108 -- nobody listens: stale
            return
    raise OSError(errno.EADDRINUSE, "another process listens there")


def _describe(sock: socket.socket) -> str:
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        if isinstance(name, bytes):
            name = name.decode(errors="backslashreplace")
        return f"unix:@{name[1:]}" if is_abstract(name) else f"unix:{name}"
    if sock.family == socket.AF_INET6:
        return f"[{name[0]}]:{name[1]}"
    if isinstance(name, tuple) and len(name) >= 2:  # noqa: PLR2004
        return f"{name[0]}:{name[1]}"
    return f"family {int(sock.family)} {name!r}"


def bind(text: str, *, backlog: int) -> Listener:
    """Bind and listen on ``--listen`` address ``text``.

    Raises:
        ValueError: a malformed address.
        OSError: the address cannot be bound; the message names it.
    """
    family, address = parse_address(text)
    sock = socket.socket(family, socket.SOCK_STREAM)
    bound = None
    try:
        if isinstance(address, str):
            if not is_abstract(address):
                remove_stale_unix_socket(address)
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        if isinstance(address, str) and not is_abstract(address):
            bound = BoundPath.of(address)
        sock.listen(backlog)
    except OSError as error:
        sock.close()
        if bound is not None:
            bound.unlink_if_ours()
        msg = f"cannot listen on {text}: {error.strerror or error}"
        raise OSError(error.errno, msg) from None
    return Listener(sock, name=text, address=_describe(sock), bound_path=bound)


def adopt_inherited(
    environ: dict[str, str], *, opened_here: Collection[int]
) -> list[Listener]:
    """Sockets systemd passed to the launcher itself (LISTEN_FDS for our pid).

    The variables are taken out of ``environ`` whatever they hold, so they are
    never passed on. The sockets are made close-on-exec: ``spawn`` passes them.
    ``opened_here``: the fds the launcher opened before (see ``passed_fds``).

    Raises:
        ValueError, OSError: a malformed variable, or a passed fd that is not an
            open socket (see ``passed_fds``).
    """
    passed: dict[str, str] = {
        name: environ.pop(name) for name in LISTEN_VARIABLES if name in environ
    }
    listeners = []
    for fd, name in passed_fds(passed, opened_here=opened_here):
        sock = socket.socket(fileno=fd)
        sock.set_inheritable(False)
        listeners.append(Listener(sock, name=name, address=_describe(sock)))
    return listeners
