"""Serving listening sockets under a token: shared by the TCP and HTTP servers.

The life of a server, phase by phase:

* All along, the server holds its drain open (``token.closes_itself``): it
  stops by itself, so the scope waits for it to return rather than cancel it
  for having nothing in flight. Only its connections' work is in flight; the
  holds show in the dump, not in the report.
* RUNNING and STOPPING: accept connections, held as ``"listening on <address>"``.
* DRAINING: stop accepting; take every connection already waiting in the
  kernel's accept queue (closing a listener with a queue resets those clients),
  then close the listeners. ``"closing connections"`` holds the drain until
  every connection has ended and the server's own cleanup has run.
* The drain deadline: the scope cancels the service, and with it every
  connection still open. With ``abort_on_cancel``, a connection that has not
  ended a few scheduler rounds later is reset (see ``abort_connection``): a
  server that shields its writes (hypercorn) would otherwise wait for a
  client that stopped reading, past every deadline.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import struct
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from contextlib import ExitStack
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel

from ._anyio_compat import spawn_unhandled, spawns_unhandled
from ._phases import Phase
from ._token import ShutdownToken

__all__ = [
    "StartedWith",
    "abort_connection",
    "check_token_and_app",
    "describe_socket",
    "serve_sockets",
]

logger = logging.getLogger("shutdown_scope")

CLOSING = "closing connections"  # what holds the drain once the listeners close

# Out of file descriptors or memory: the listener is fine, the process is not.
# Wait and retry instead of ending the server (as trio.serve_listeners does).
_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
_RESOURCE_PAUSE = 0.1
# accept() reports some errors of one pending connection (as trio's
# SocketListener knows): skip that client, keep the listener.
_ONE_CLIENT_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        "ECONNABORTED",
        "EPROTO",
        "ENETDOWN",
        "ENOPROTOOPT",
        "EHOSTDOWN",
        "ENONET",
        "EHOSTUNREACH",
        "EOPNOTSUPP",
        "ENETUNREACH",
        "EPERM",
        "ECONNRESET",
    )
    if hasattr(errno, name)
)
# Scheduler rounds a cancelled connection gets to end by itself (hypercorn
# answers 500 and closes) before it is reset.
_UNWIND_ROUNDS = 20
_LINGER_RESET = struct.pack("ii", 1, 0)  # l_onoff=1, l_linger=0: close sends RST


class StartedWith(anyio.abc.TaskStatus[None]):
    """Passes ``serve_sockets``' ``started()`` on, with the servers' addresses."""

    def __init__(
        self, outer: anyio.abc.TaskStatus[list[str]], addresses: list[str]
    ) -> None:
        self._outer = outer
        self._addresses = addresses

    def started(self, value: None = None) -> None:  # noqa: ARG002 -- always None
        self._outer.started(self._addresses)


def check_token_and_app(token: object, app: object) -> None:
    """A server's ``serve(token, app, config)``: the token first, then an app.

    Raises:
        TypeError: either is not what it must be (the message says the fix).
    """
    if not isinstance(token, ShutdownToken):
        msg = (
            f"serve() takes the service's ShutdownToken first, not {token!r}; "
            "start it with: await scope.start(serve, app, config)"
        )
        raise TypeError(msg)
    if not callable(app):
        msg = f"app must be an ASGI application (a callable), not {app!r}"
        raise TypeError(msg)


def describe_socket(sock: socket.socket) -> str:
    """``127.0.0.1:8000``, ``[::1]:8000`` or ``unix:/path`` for a bound socket."""
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        path = name.decode(errors="replace") if isinstance(name, bytes) else name
        return f"unix:{path or '(unnamed)'}"
    host, port = name[0], name[1]
    return f"[{host}]:{port}" if sock.family == socket.AF_INET6 else f"{host}:{port}"


def abort_connection(sock: socket.socket) -> None:
    """Reset a connection: whatever waits to read or write on it fails now.

    ``SO_LINGER`` 0 makes its close send RST and drop the unsent bytes, and
    ``shutdown()`` wakes a writer blocked on a client that stopped reading (the
    socket turns writable, the write fails), which then closes it. The socket
    is not closed here: its owner (an event loop's transport) still uses it.
    """
    if sock.fileno() == -1:
        return  # closed already
    with contextlib.suppress(OSError):  # not TCP (unix), or reset already
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    with contextlib.suppress(OSError):  # not connected any more
        sock.shutdown(socket.SHUT_RDWR)


class _OpenConnections:
    """The connections being served, reset if the server is cancelled first.

    ``serve`` runs each connection's handler; ``abort_when_cancelled`` returns
    once the listeners are closed and every connection has ended.
    """

    def __init__(
        self, handle: Callable[[socket.socket], Coroutine[Any, Any, None]]
    ) -> None:
        self._handle = handle
        self._sockets: set[socket.socket] = set()
        self._accepting = True
        self._all_ended = anyio.Event()

    def add(self, conn: socket.socket) -> None:
        self._sockets.add(conn)

    async def serve(self, conn: socket.socket) -> None:
        try:
            await self._handle(conn)
        finally:
            self._sockets.discard(conn)
            self._check()

    def accepting_over(self) -> None:
        self._accepting = False
        self._check()

    def _check(self) -> None:
        if not (self._accepting or self._sockets):
            self._all_ended.set()

    async def abort_when_cancelled(self) -> None:
        """Return once every connection ended; when cancelled first, reset them."""
        try:
            await self._all_ended.wait()
        finally:
            if not self._all_ended.is_set():
                # Cancelled (the deadline, or a failure): the connections were
                # cancelled too. Those that cannot end (a write shielded and
                # blocked on a client that does not read) are reset, and so are
                # those whose handler ended but whose socket is still open (an
                # asyncio transport that waits to flush to such a client).
                open_when_cancelled = list(self._sockets)
                with anyio.CancelScope(shield=True):  # bounded: a few rounds
                    for _ in range(_UNWIND_ROUNDS):
                        if not self._sockets:
                            break
                        await anyio.lowlevel.checkpoint()
                for sock in open_when_cancelled:
                    abort_connection(sock)  # nothing to do once it is closed


def _accept_ready(
    sock: socket.socket, spawn: Callable[[socket.socket], object]
) -> OSError | None:
    """Accept (and spawn) every connection waiting in ``sock``'s queue.

    Returns the error that stopped it early (out of descriptors, say); the
    connections accepted before it are spawned all the same.
    """
    while True:
        try:
            conn, _ = sock.accept()
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as error:
            if error.errno in _ONE_CLIENT_ERRNOS:
                continue  # that client's own failure: the listener is fine
            return error
        conn.setblocking(False)  # noqa: FBT003 -- the stdlib signature
        spawn(conn)


async def _accept_loop(
    sock: socket.socket, spawn: Callable[[socket.socket], object]
) -> None:
    while True:
        await anyio.wait_readable(sock)
        error = _accept_ready(sock, spawn)
        if error is None:
            continue
        if error.errno not in _RESOURCE_ERRNOS:
            raise error
        logger.warning(
            "shutdown_scope: accepting on %s failed (%s); retrying",
            describe_socket(sock),
            error,
        )
        await anyio.sleep(_RESOURCE_PAUSE)


def _take_queue_and_close(
    sockets: Sequence[socket.socket], spawn: Callable[[socket.socket], object]
) -> None:
    for sock in sockets:
        # An error here (out of descriptors) leaves the rest of the queue to
        # be reset by the close: nothing better can be done for them.
        _accept_ready(sock, spawn)
        sock.close()


async def serve_sockets(
    token: ShutdownToken,
    sockets: Sequence[socket.socket],
    handle: Callable[[socket.socket], Coroutine[Any, Any, None]],
    *,
    on_drain: Callable[[], Awaitable[None]] | None = None,
    after_connections: Callable[[], Awaitable[None]] | None = None,
    hold: ExitStack | None = None,
    abort_on_cancel: bool = False,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Accept on ``sockets`` until ``token`` drains; ``handle`` each connection.

    Args:
        token: the service's token.
        sockets: listening, non-blocking sockets; this function closes them.
        handle: runs one accepted connection (a connected, non-blocking socket
            it owns); cancelled at the drain deadline.
        on_drain: called once the listeners are closed, to tell connections
            the drain has begun (the HTTP server closes idle ones then).
        after_connections: awaited once every connection has ended (the ASGI
            lifespan shutdown), the drain still held open.
        hold: where to keep the drain held open (``token.closes_itself``), for
            a caller with cleanup of its own after this returns. By default it
            is released when this returns.
        abort_on_cancel: when this is cancelled, reset the connections that
            have not ended a few scheduler rounds later (``handle`` shields
            its writes, as hypercorn does).
        task_status: ``started()`` once every socket is being accepted on.
    """
    names = [describe_socket(sock) for sock in sockets]
    with ExitStack() as own:
        closing = own if hold is None else hold
        tracked = _OpenConnections(handle) if abort_on_cancel else None
        serve = handle if tracked is None else tracked.serve
        async with anyio.create_task_group() as connections:
            if tracked is not None:
                connections.start_soon(
                    tracked.abort_when_cancelled, name="shutdown_scope resets"
                )

            unhandled = spawns_unhandled(connections)

            def spawn(conn: socket.socket) -> None:
                if tracked is not None:
                    tracked.add(conn)
                # No TaskHandle: it would cost each connection about 3 KB.
                spawn_unhandled(
                    connections,
                    serve,
                    conn,
                    name="shutdown_scope connection",
                    unhandled=unhandled,
                )

            with ExitStack() as listening:
                for name in names:
                    listening.enter_context(token.closes_itself(f"listening on {name}"))
                try:
                    with token.cancel_on(Phase.DRAINING):
                        async with anyio.create_task_group() as accepting:
                            for sock in sockets:
                                accepting.start_soon(_accept_loop, sock, spawn)
                            task_status.started()
                finally:
                    # Before the listening holds go: never idle in between.
                    closing.enter_context(token.closes_itself(CLOSING))
                    _take_queue_and_close(sockets, spawn)
            if tracked is not None:
                tracked.accepting_over()
            if on_drain is not None:
                await on_drain()
        if after_connections is not None:
            await after_connections()
