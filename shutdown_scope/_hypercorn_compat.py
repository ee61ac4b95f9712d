"""hypercorn beyond its documented ``serve()``: the one module that imports it.

Supported: hypercorn >=0.17,<0.19, the minors tested (0.17.3 and 0.18.0, by
``nox -s hypercorn_versions``); the ``hypercorn`` extra pins it. The layer is
this module and the two that build on it, which import hypercorn's names only
from here: ``_hypercorn_workers`` (hypercorn's ``TCPServer`` of each I/O tree
with its idle close, read loop and close overridden;
``WorkerContext``; ``Lifespan``), ``_hypercorn_h2`` (hypercorn's
``H2Protocol``, replaced) and ``_keep_alive`` (a TCPServer's ``idle_task``,
replaced: its ``restart`` and ``stop``, and ``_task_group.spawn``).
``shutdown_scope.hypercorn`` and the ``serve`` command import from the layer,
never from hypercorn.

What is used here, beyond hypercorn's documented ``Config``:
``Config.create_sockets()`` (and the sockets its frames hold when a bind
fails), ``hypercorn.utils.wrap_app``, a TCPServer's
``protocol.protocol.connection`` (h11's), an H11Protocol's ``send`` and
``Lifespan.asgi_send`` (both wrapped), a ``WorkerContext`` of ours
(``ConnectionContext``) given to a TCPServer, and how H11Protocol and
H2Protocol compare their request count with ``keep_alive_max_requests``.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, NamedTuple, TypeVar

import anyio
import h11
from hypercorn.config import Config
from hypercorn.events import Closed, Event, RawData, Updated
from hypercorn.protocol import ProtocolWrapper
from hypercorn.protocol.events import Event as StreamEvent
from hypercorn.protocol.events import StreamClosed
from hypercorn.protocol.h2 import H2Protocol
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.typing import (
    AppWrapper,
    ASGISendEvent,
    ConnectionState,
    LifespanState,
    TaskGroup,
    WorkerContext,
)
from hypercorn.typing import Event as ContextEvent
from hypercorn.utils import wrap_app

if TYPE_CHECKING:
    from hypercorn.asyncio.lifespan import Lifespan as _AsyncioLifespan
    from hypercorn.asyncio.tcp_server import TCPServer as _AsyncioTCPServer
    from hypercorn.asyncio.worker_context import WorkerContext as _AsyncioContext
    from hypercorn.trio.lifespan import Lifespan as _TrioLifespan
    from hypercorn.trio.tcp_server import TCPServer as _TrioTCPServer
    from hypercorn.trio.worker_context import WorkerContext as _TrioContext

    # hypercorn's classes of each I/O tree, for annotations (the trio tree
    # imports trio: at run time, see asyncio_tree() and trio_tree()).
    AsyncioLifespan = _AsyncioLifespan
    AsyncioTCPServer = _AsyncioTCPServer
    AsyncioWorkerContext = _AsyncioContext
    TrioLifespan = _TrioLifespan
    TrioTCPServer = _TrioTCPServer
    TrioWorkerContext = _TrioContext
    TCPServer = AsyncioTCPServer | TrioTCPServer
    Lifespan = AsyncioLifespan | TrioLifespan
    # One of hypercorn's TCPServer classes, kept as the one it is.
    TCPServerT = TypeVar("TCPServerT", AsyncioTCPServer, TrioTCPServer)
    ConnectionTasks = TaskGroup  # a TCPServer's ``_task_group``

__all__ = [
    "AppWrapper",
    "AsyncioTree",
    "Closed",
    "Config",
    "ConnectionContext",
    "ConnectionState",
    "ContextEvent",
    "Event",
    "H2Protocol",
    "H11Protocol",
    "LifespanState",
    "ProtocolWrapper",
    "RawData",
    "StreamClosed",
    "StreamEvent",
    "TaskGroup",
    "TrioTree",
    "Updated",
    "WorkerContext",
    "asgi_app",
    "asyncio_tree",
    "close_http1_after_each_response",
    "h11_connection",
    "kernel_has_bytes",
    "listen",
    "refuse_requests",
    "trio_tree",
    "watch_lifespan_failed",
]


class AsyncioTree(NamedTuple):
    """hypercorn's classes of its asyncio I/O tree (``hypercorn.asyncio``)."""

    tcp_server: type[AsyncioTCPServer]
    worker_context: type[AsyncioWorkerContext]
    lifespan: type[AsyncioLifespan]


class TrioTree(NamedTuple):
    """hypercorn's classes of its Trio I/O tree (``hypercorn.trio``)."""

    tcp_server: type[TrioTCPServer]
    worker_context: type[TrioWorkerContext]
    lifespan: type[TrioLifespan]


def asyncio_tree() -> AsyncioTree:
    """The classes of hypercorn's asyncio tree (imported on demand)."""
    from hypercorn.asyncio.lifespan import Lifespan as _Lifespan
    from hypercorn.asyncio.tcp_server import TCPServer as _TCPServer
    from hypercorn.asyncio.worker_context import WorkerContext as _WorkerContext

    return AsyncioTree(_TCPServer, _WorkerContext, _Lifespan)


def trio_tree() -> TrioTree:
    """The classes of hypercorn's Trio tree (imported on demand: they import trio)."""
    from hypercorn.trio.lifespan import Lifespan as _Lifespan
    from hypercorn.trio.tcp_server import TCPServer as _TCPServer
    from hypercorn.trio.worker_context import WorkerContext as _WorkerContext

    return TrioTree(_TCPServer, _WorkerContext, _Lifespan)


def asgi_app(app: object, config: Config) -> AppWrapper:
    """``app`` (an ASGI 3 callable) as hypercorn's protocols call it."""
    return wrap_app(app, config.wsgi_max_body_size, "asgi")  # type: ignore[arg-type]


def listen(config: Config) -> list[socket.socket]:
    """Bind (or adopt, for ``fd://``) every address of ``config.bind``."""
    try:
        sockets = config.create_sockets().insecure_sockets
    except OSError as error:
        _close_sockets_left_in(error.__traceback__)
        error.__traceback__ = None
        msg = f"hypercorn cannot listen on {', '.join(config.bind)}: {error.strerror}"
        raise OSError(error.errno, msg) from None
    for sock in sockets:
        sock.listen(config.backlog)
    return sockets


def _close_sockets_left_in(traceback: TracebackType | None) -> None:
    """Close the sockets hypercorn made before a bind failed.

    ``Config.create_sockets`` does not close them; left to the garbage collector,
    each would turn into a ``ResourceWarning`` at some later, unrelated moment.
    """
    while traceback is not None:
        for value in traceback.tb_frame.f_locals.values():
            held = value if isinstance(value, list) else [value]
            for item in held:
                if isinstance(item, socket.socket):
                    item.close()
        traceback = traceback.tb_next


class _AtEveryHttp1Response(float):
    """``keep_alive_max_requests`` once HTTP/1.1 keep-alive is over.

    hypercorn's H11Protocol adds ``Connection: close`` to a final response when
    ``requests >= keep_alive_max_requests``: the request count, an int, cannot
    compare itself with a float, so Python asks the reflected ``__le__``, which
    says yes. H2Protocol (and ours, in ``_hypercorn_h2``) asks ``requests >
    keep_alive_max_requests``, whose reflection (``__lt__``) is float's own:
    HTTP/2 keeps the configured limit. A float, not an int: hypercorn takes
    any number there (``math.inf`` for no limit), which int() would refuse.
    """

    __slots__ = ()

    def __le__(self, other: object) -> bool:
        return True


def close_http1_after_each_response(config: Config) -> None:
    """From now on, HTTP/1.1 responses of servers using ``config`` carry
    ``Connection: close`` and their connection closes after them (no cost
    per request before this is called; HTTP/2 is not affected)."""
    # hypercorn annotates an int; it compares any number (see the class).
    config.keep_alive_max_requests = _AtEveryHttp1Response(  # type: ignore[assignment]
        config.keep_alive_max_requests
    )


def h11_connection(server: TCPServer) -> h11.Connection | None:
    """The h11 connection of ``server``'s HTTP/1.1 protocol (None: another one)."""
    connection = getattr(server.protocol.protocol, "connection", None)
    return connection if isinstance(connection, h11.Connection) else None


def refuse_requests(protocol: H11Protocol | H2Protocol, error: type[Exception]) -> None:
    """From here on, a request that ``protocol`` parses raises ``error``.

    It never reaches the app. (Of the events the protocol sends its TCPServer,
    ``Updated(idle=False)`` announces a request.)
    """
    send = protocol.send

    async def refusing(event: Event) -> None:
        if isinstance(event, Updated) and not event.idle:
            raise error
        await send(event)

    protocol.send = refusing


def _unread_bytes(server: TCPServer, conn: socket.socket) -> bool:
    """Whether the client has sent bytes the protocol has not handled yet."""
    connection = h11_connection(server)
    if connection is not None and connection.trailing_data[0]:
        return True
    return kernel_has_bytes(conn)


def kernel_has_bytes(conn: socket.socket) -> bool:
    """Whether the kernel holds bytes the client sent that are not read yet."""
    try:
        pending = conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except OSError:  # nothing to read (EAGAIN), or already closed or reset
        return False
    return bool(pending)


class _Terminated:
    """hypercorn's "terminated" event, seen by one connection.

    After a response, hypercorn closes the connection if the drain has begun.
    A keep-alive client may already have sent its next request (it did not see
    ``Connection: close`` on a response that began before the shutdown); those
    bytes reached the server, so that request is served too, and the
    connection closes after it.
    """

    # One per connection, held while it is idle: no instance dict (a third of
    # its size).
    __slots__ = ("_conn", "_shared", "server")

    def __init__(self, shared: ContextEvent, conn: socket.socket) -> None:
        self._shared = shared
        self._conn = conn
        self.server: TCPServer | None = None

    def is_set(self) -> bool:
        if not self._shared.is_set():
            return False
        return self.server is None or not _unread_bytes(self.server, self._conn)

    # The shared event's own coroutines: no frame of ours in them (hypercorn
    # waits on this once per request).
    def wait(self) -> Awaitable[None]:
        return self._shared.wait()

    def set(self) -> Awaitable[None]:
        return self._shared.set()

    def clear(self) -> Awaitable[None]:
        return self._shared.clear()


class ConnectionContext:
    """hypercorn's WorkerContext, with ``terminated`` seen by one connection.

    Also what that connection's TCPServer needs to know: its socket, and when
    it was accepted (on anyio's clock).
    """

    # One per connection, held while it is idle: no instance dict (half its
    # size). hypercorn only reads these.
    __slots__ = (
        "_shared",
        "accepted_at",
        "conn",
        "event_class",
        "mark_request",
        "single_task_class",
        "sleep",
        "terminate",
        "terminated",
        "time",
    )

    def __init__(self, shared: WorkerContext, conn: socket.socket) -> None:
        self._shared = shared
        self.conn = conn
        self.accepted_at = anyio.current_time()
        self.terminate = shared.terminate
        self.terminated = _Terminated(shared.terminated, conn)
        self.event_class = shared.event_class
        self.single_task_class = shared.single_task_class
        self.sleep = shared.sleep
        self.time = shared.time
        self.mark_request = shared.mark_request  # once per request: no wrapper


def watch_lifespan_failed(lifespan: Lifespan, on_failed: Callable[[], None]) -> None:
    """Call ``on_failed`` when the app sends ``lifespan.startup.failed`` or
    ``lifespan.shutdown.failed``.

    hypercorn sets its "startup" event when startup fails too (and, on Trio, only
    then ends the lifespan task): this tells the two apart. A failed shutdown
    must be waited for before the lifespan task is ended (hypercorn raises it
    from a ``finally`` that awaits).
    """
    forward: Callable[[ASGISendEvent], Awaitable[None]] = lifespan.asgi_send

    async def asgi_send(message: ASGISendEvent) -> None:
        if message["type"] in {"lifespan.startup.failed", "lifespan.shutdown.failed"}:
            on_failed()
        await forward(message)

    lifespan.asgi_send = asgi_send  # type: ignore[method-assign]
