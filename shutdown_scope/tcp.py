"""A TCP (or unix socket) server that drains under a shutdown scope.

Start it as a service; ``started()`` hands back the addresses it serves
(``scope.start`` passes positional arguments only, so options go in a partial)::

    async def handle(stream: SocketStream, token: ShutdownToken) -> None: ...


    async with graceful_scope() as scope:
        server = functools.partial(serve_tcp, host="127.0.0.1", port=8000)
        addresses = await scope.start(server, handle, name="tcp")

It accepts connections until its token drains, then takes the connections
already waiting in the kernel's accept queue, closes its listeners (new clients
are refused) and waits for every connection to end; the scope cancels the ones
still open at the drain deadline. A handler watches the token to end an idle
connection at once (see ``examples/tcp_echo.py``).
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import socket
import stat
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from ._listeners import StartedWith, describe_socket, serve_sockets
from ._token import ShutdownToken
from ._unix_paths import BoundPath

__all__ = ["ConnectionHandler", "serve_tcp"]

_logger = logging.getLogger("shutdown_scope")

ConnectionHandler = Callable[[anyio.abc.SocketStream, ShutdownToken], Awaitable[None]]
"""``handler(stream, token)`` serves one connection; the stream is closed after."""


def _check_args(
    host: object, port: object, path: object, sockets: object, backlog: object
) -> None:
    given = {"host/port": host is not None or port != 0, "path": path is not None}
    given["sockets"] = sockets is not None
    if sum(given.values()) > 1:
        modes = " and ".join(mode for mode, on in given.items() if on)
        msg = f"serve_tcp() takes one of host/port, path or sockets, not {modes}"
        raise ValueError(msg)
    if host is not None and not isinstance(host, str):
        msg = f"host must be a str, or None for every interface, not {host!r}"
        raise TypeError(msg)
    if path is not None and not (isinstance(path, (str, os.PathLike)) and str(path)):
        msg = f"path must be a non-empty str or os.PathLike, not {path!r}"
        raise TypeError(msg)
    for name, value, top in [("port", port, 65535), ("backlog", backlog, None)]:
        if isinstance(value, bool) or not isinstance(value, int):
            msg = f"{name} must be an int, not {value!r}"
            raise TypeError(msg)
        if value < 0 or (top is not None and value > top):
            msg = f"{name} must be from 0 to {top or 'any'}, not {value}"
            raise ValueError(msg)


def _inherited(sockets: Sequence[socket.socket]) -> list[socket.socket]:
    if isinstance(sockets, socket.socket) or not all(
        isinstance(sock, socket.socket) for sock in sockets
    ):
        msg = f"sockets must be a sequence of socket.socket objects, not {sockets!r}"
        raise TypeError(msg)
    if not sockets:
        msg = "sockets is empty: pass at least one listening socket"
        raise ValueError(msg)
    for sock in sockets:
        kinds = (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX)
        if (
            sock.fileno() < 0
            or sock.type != socket.SOCK_STREAM
            or sock.family not in kinds
        ):
            msg = f"sockets must be open TCP or unix stream sockets, not {sock!r}"
            raise ValueError(msg)
        if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            msg = f"sockets must already listen (call listen() first): {sock!r}"
            raise ValueError(msg)
    for sock in sockets:
        sock.setblocking(False)  # noqa: FBT003 -- the stdlib signature
    return list(sockets)


def _listen(
    family: socket.AddressFamily, address: str | tuple[Any, ...], backlog: int
) -> socket.socket:
    """A non-blocking listening socket; an error names the address."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if family != socket.AF_UNIX:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:  # "::" takes IPv4 too (the dual stack)
            only_v6 = address[0] != "::"
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, only_v6)
        sock.bind(address)
        sock.listen(backlog)
    except OSError as error:
        sock.close()
        where = f"unix:{address}" if isinstance(address, str) else _host_port(address)
        msg = f"cannot listen on {where}: {error.strerror or error}"
        raise OSError(error.errno, msg) from error
    sock.setblocking(False)  # noqa: FBT003 -- the stdlib signature
    return sock


def _host_port(address: tuple[Any, ...]) -> str:
    host, port = address[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _clear_stale_socket(path: Path) -> None:
    """Remove a socket file nobody listens on; refuse to touch anything else."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        msg = f"cannot listen on unix:{path}: it exists and is not a socket;"
        raise FileExistsError(errno.EEXIST, f"{msg} refusing to remove it")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.setblocking(False)  # noqa: FBT003 -- the stdlib signature
        try:
            probe.connect(str(path))
        except ConnectionRefusedError:
            path.unlink()  # stale: its server ended without removing it
            return
        except BlockingIOError:
            pass  # a live server whose accept queue is full
        except OSError:
            return  # cannot tell: bind() will say what is wrong
    msg = f"cannot listen on unix:{path}: another server is listening there"
    raise OSError(errno.EADDRINUSE, msg)


async def _open(host: str | None, port: int, backlog: int) -> socket.socket:
    if host is None:
        if socket.has_dualstack_ipv6():
            return _listen(socket.AF_INET6, ("::", port), backlog)
        return _listen(socket.AF_INET, ("0.0.0.0", port), backlog)  # noqa: S104 -- asked for
    # The first address the name resolves to; for several, pass sockets=.
    try:
        found = await anyio.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as error:
        msg = f"cannot listen on {host}:{port}: {error.strerror or error}"
        raise socket.gaierror(error.errno, msg) from error
    family, _, _, _, address = found[0]
    return _listen(family, address, backlog)


async def _serve_connection(
    token: ShutdownToken, handler: ConnectionHandler, sock: socket.socket
) -> None:
    unix = sock.family == socket.AF_UNIX
    try:
        peer = "unix" if unix else _host_port(sock.getpeername())
    except OSError:
        peer = "(disconnected)"
    with token.in_flight(f"connection {peer}"):
        stream: anyio.abc.SocketStream | None = None
        try:
            if unix:
                stream = await anyio.abc.UNIXSocketStream.from_socket(sock)
            else:
                stream = await anyio.abc.SocketStream.from_socket(sock)
            await handler(stream, token)
        except Exception:
            # One bad connection must not end the server. Cancellation is a
            # BaseException and goes through.
            _logger.exception("shutdown_scope: connection %s failed", peer)
        finally:
            if stream is None:
                sock.close()
            else:
                with token.shield_cleanup():
                    await stream.aclose()


async def serve_tcp(
    token: ShutdownToken,
    handler: ConnectionHandler,
    *,
    host: str | None = None,
    port: int = 0,
    path: str | os.PathLike[str] | None = None,
    sockets: Sequence[socket.socket] | None = None,
    backlog: int = 1024,
    task_status: anyio.abc.TaskStatus[list[str]] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve connections with ``handler`` until the token's drain has ended them.

    Give one of ``host``/``port``, ``path`` or ``sockets``. Each connection runs
    ``await handler(stream, token)``, in flight as ``"connection <peer>"`` (peer
    ``127.0.0.1:5555``, ``[::1]:5555`` or ``unix``); its stream is closed after.
    A handler that raises is logged with its peer (logger ``shutdown_scope``)
    and the server goes on, as with asyncio's ``start_server`` (trio's
    ``serve_listeners`` lets it end the server instead). A checkpoint.

    Args:
        token: the service's token (the scope passes it).
        handler: ``async def handler(stream, token)`` for each connection; it
            should end an idle connection once ``token`` reaches DRAINING.
        host: the address or name to bind (its first address); None binds every
            interface, IPv4 and IPv6 where the system has both.
        port: the TCP port; 0 picks a free one.
        path: a unix socket path to bind instead. A stale socket file there is
            removed first; the server removes its own socket file when it ends,
            unless a successor has bound a new one there meanwhile.
        sockets: listening sockets to serve instead (e.g. from systemd socket
            activation); made non-blocking, and closed when the server ends.
        backlog: the accept queue length of a socket bound here.
        task_status: ``started()`` with the served addresses, such as
            ``["127.0.0.1:8000"]`` or ``["unix:/run/app.sock"]``.

    Raises:
        TypeError, ValueError: invalid arguments (the message states the rule).
        OSError: binding failed, e.g. the address is in use; the errno is kept
            and the message names the address. Raised before ``started()``.
    """
    if not callable(handler):
        msg = f"handler must be an async function (stream, token), not {handler!r}"
        raise TypeError(msg)
    _check_args(host, port, path, sockets, backlog)
    unix_path = None if path is None else Path(path)
    bound: BoundPath | None = None
    if sockets is not None:
        listeners = _inherited(sockets)
    elif unix_path is not None:
        _clear_stale_socket(unix_path)
        listeners = [_listen(socket.AF_UNIX, str(unix_path), backlog)]
    else:
        listeners = [await _open(host, port, backlog)]
    try:
        if unix_path is not None:
            # Only this file is removed at the end: a successor may bind a new one.
            bound = BoundPath.of(str(unix_path))
        addresses = [describe_socket(sock) for sock in listeners]
        await serve_sockets(
            token,
            listeners,
            functools.partial(_serve_connection, token, handler),
            task_status=StartedWith(task_status, addresses),
        )
    finally:
        for sock in listeners:
            sock.close()  # serve_sockets closed them, unless it failed early
        if bound is not None:
            bound.unlink_if_ours()
