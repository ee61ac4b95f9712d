"""uvicorn's protocols and lifespan, under our accept loop and our task groups.

Supported: uvicorn >=0.54,<0.55, the minors tested (0.54.0, the newest
release); the ``uvicorn`` extra pins it. This module is the only one that knows
uvicorn beyond its documented ``Config``: ``Config.load()`` and the attributes
it sets (``http_protocol_class``, ``ws_protocol_class``, ``lifespan_class``,
``encoded_headers``), ``ServerState``, the constructor uvicorn's own
``Server.startup()`` uses for a protocol (``config=, server_state=,
app_state=, _loop=``), an HTTP protocol's ``server_state``, ``cycle``
(``response_started``, ``response_complete``, ``default_headers``,
``on_response``), ``pipeline`` (httptools') and ``shutdown()``, a websocket
protocol's constructor and ``run_asgi()``, and ``LifespanOn``'s ``main()``, ``send()``,
``receive_queue``, ``startup_event``, ``error_occurred`` and ``shutdown()``.

uvicorn's ``Server`` is not used: it captures SIGTERM and SIGINT itself (and
raises them again once it is done), closes its listeners with clients still in
the accept queue, runs request tasks outside any task group, and bounds its
shutdown with its own timeout. Here each accepted connection goes to one of
uvicorn's protocols through ``loop.connect_accepted_socket``; what the scope
needs around it (the drain, the deadline, the lifespan's place in the stop
order) is ours.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import socket
import time
from collections.abc import Callable
from email.utils import formatdate
from typing import Any, Final, Protocol, cast

import anyio
from anyio.abc import TaskGroup, TaskStatus
from uvicorn.config import Config
from uvicorn.lifespan.on import LifespanOn
from uvicorn.protocols.http.flow_control import CLOSE_HEADER
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from ._open_transports import Activity, OpenTransports

__all__ = ["LifespanStartupError", "UvicornServer", "is_http_protocol", "loaded_copy"]

# A connection with no request yet at the drain: how long after its accept it
# may send its first one (it connected while we listened, or queued).
_FIRST_REQUEST_GRACE = 1.0
# uvicorn's Server refreshes its default headers (Date) once a second.
_HEADERS_REFRESH = 1.0
_CLOSE: Final = CLOSE_HEADER  # (b"connection", b"close")


# The logger of uvicorn's protocols, and what they log when the app raises.
_UVICORN_ERROR = logging.getLogger("uvicorn.error")
_APP_EXCEPTION = "Exception in ASGI application\n"


class _QuietWhenCut(logging.Filter):
    """Drops uvicorn's report of a request task cancelled by ``cancel_requests``
    (no wrapper around the app: nothing added to each request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        cut = isinstance(error, asyncio.CancelledError)
        return not (cut and record.msg == _APP_EXCEPTION)


class LifespanStartupError(RuntimeError):
    """The app's ASGI lifespan startup failed: serving never began."""


class _Cycle(Protocol):
    response_started: bool
    response_complete: bool
    default_headers: list[tuple[bytes, bytes]]
    on_response: Callable[[], None]


class _HttpProtocol(Protocol):
    """What the server uses of uvicorn's HTTP/1.1 protocols (h11 and httptools)."""

    server_state: ServerState
    cycle: _Cycle | None

    def shutdown(self) -> None: ...


def _http_protocols() -> tuple[type[asyncio.Protocol], ...]:
    known: list[type[asyncio.Protocol]] = [H11Protocol]
    try:  # needs the httptools package
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        pass
    else:
        known.append(HttpToolsProtocol)
    return tuple(known)


def is_http_protocol(cls: type) -> bool:
    """Whether ``cls`` is one of uvicorn's HTTP/1.1 protocols (or a subclass)."""
    return issubclass(cls, _http_protocols())


def loaded_copy(config: Config, app: Callable[..., Any]) -> Config:
    """A loaded copy of ``config`` that serves ``app``; ``config`` is left as it is.

    ``config.app`` is not used (uvicorn's ``Config`` requires one); ``app``,
    already wrapped by the caller, is served with uvicorn's own middleware
    around it (proxy headers, the message logger at trace level).
    """
    loaded = copy.copy(config)
    loaded.app = app
    loaded.interface = "asgi3"
    loaded.loaded = False
    loaded.load()
    return loaded


_Report = Callable[[asyncio.BaseTransport], None]


def _reporting(base: type[asyncio.Protocol], lost: _Report) -> type[asyncio.Protocol]:
    """``base`` (one of uvicorn's protocol classes), telling ``lost`` when its
    connection is gone (once per connection: nothing is added per request). A
    websocket upgrade hands the transport to a protocol of the websocket
    class, which then tells ``lost`` instead."""

    class Reporting(base):  # type: ignore[valid-type,misc]
        transport: asyncio.BaseTransport

        def connection_lost(self, exc: Exception | None) -> None:
            try:
                super().connection_lost(exc)
            finally:
                lost(self.transport)

    Reporting.__name__ = Reporting.__qualname__ = base.__name__
    return Reporting


def _closing_after_the_app(
    base: type[asyncio.Protocol],
    connections: OpenTransports,
    answer_wait: Callable[[], float],
    state: ServerState,
) -> type[asyncio.Protocol]:
    """``base`` (one of uvicorn's websocket protocol classes), closing its
    connection soon after the app has returned during the drain, and built
    on the server's own ``state``.

    An HTTP protocol hands an upgraded connection over with its own
    ``server_state``, which from the stop on adds ``Connection: close`` to
    every response (``close_http1_after_each_response``): the websocket
    handshake must not carry it.

    uvicorn waits up to 10 s for the client to answer a close frame, which
    would hold the drain; a client that vanished never answers. The client
    gets ``answer_wait()`` seconds to answer (uvicorn closes at once when it
    does): closing before its answer could reset the connection under a
    close frame it has not read yet.
    """

    class ClosingAfterTheApp(base):  # type: ignore[valid-type,misc]
        transport: asyncio.BaseTransport

        def __init__(self, *, server_state: ServerState, **kwargs: Any) -> None:
            del server_state  # the HTTP protocol's: maybe the stopping one
            super().__init__(server_state=state, **kwargs)

        async def run_asgi(self) -> None:
            try:
                await super().run_asgi()
            finally:
                if connections.draining and not self.transport.is_closing():
                    loop = asyncio.get_running_loop()
                    loop.call_later(max(0.0, answer_wait()), self.transport.close)

    ClosingAfterTheApp.__name__ = ClosingAfterTheApp.__qualname__ = base.__name__
    return ClosingAfterTheApp


class _Lifespan:
    """uvicorn's lifespan, with the app's lifespan task owned by our task group.

    The task runs shielded, so that a service cancelled at the drain deadline
    can still run the app's lifespan shutdown (bounded by the caller); ``end``
    then ends it.
    """

    def __init__(self, config: Config) -> None:
        self._config = config
        self._impl: Any = config.lifespan_class(config)  # LifespanOn or LifespanOff
        self.state: dict[str, Any] = self._impl.state
        self._scope = anyio.CancelScope(shield=True)
        self._failure: str | None = None
        self._shutdown_failure: str | None = None
        self._started = False
        self._stop_begun = False

    async def _run(self, *, task_status: TaskStatus[None]) -> None:
        with self._scope:
            task_status.started()
            await self._impl.main()  # it logs and swallows the app's errors

    async def start(self, tasks: TaskGroup) -> None:
        """Run the lifespan startup; return once it is complete.

        Raises:
            LifespanStartupError: the app sent ``lifespan.startup.failed``, or
                raised with ``config.lifespan="on"``.
        """
        impl = self._impl
        if not isinstance(impl, LifespanOn):
            await impl.startup()  # LifespanOff: nothing to run
            self._started = True
            return
        forward = impl.send

        async def send(message: Any) -> None:
            if message["type"] == "lifespan.startup.failed":
                self._failure = message.get("message") or "no message"
            elif message["type"] == "lifespan.shutdown.failed":
                self._shutdown_failure = message.get("message") or "no message"
            await forward(message)

        impl.send = send  # type: ignore[method-assign]
        await tasks.start(self._run, name="uvicorn lifespan")
        await impl.receive_queue.put({"type": "lifespan.startup"})
        await impl.startup_event.wait()
        if self._failure is not None:
            msg = f"the app's lifespan startup failed: {self._failure}"
            raise LifespanStartupError(msg)
        if impl.error_occurred and self._config.lifespan == "on":
            msg = (
                "the app's lifespan startup raised an exception (logged by"
                " uvicorn.error); with lifespan='auto' an app without lifespan"
                " support is served anyway"
            )
            raise LifespanStartupError(msg)
        self._started = True

    async def stop(self) -> None:
        """Run the lifespan shutdown once, if the startup was complete.

        Raises:
            RuntimeError: the app sent ``lifespan.shutdown.failed`` (uvicorn
                only logs it): the stop is not clean.
        """
        if self._started and not self._stop_begun:
            self._stop_begun = True
            await self._impl.shutdown()
            if self._shutdown_failure is not None:
                msg = f"the app's lifespan shutdown failed: {self._shutdown_failure}"
                raise RuntimeError(msg)

    def end(self) -> None:
        """End the lifespan task (after its shutdown, or giving up on it)."""
        self._scope.cancel()


class UvicornServer:
    """uvicorn's protocols for each accepted connection, and the app's lifespan.

    ``handle`` hands one connection to a protocol and returns: the event loop
    serves it, and ``connections`` keeps it until it is lost (no task per
    connection). ``drain`` marks the drain's start (a websocket whose app has
    returned then waits ``close_answer_wait()`` seconds for the client's close
    frame); ``close_connections`` closes each one once idle and waits for
    them all; ``wait_requests`` and ``cancel_requests`` deal with the app's
    request tasks, which uvicorn starts outside any task group.
    """

    def __init__(
        self, config: Config, *, close_answer_wait: Callable[[], float]
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._config = config
        self.state = ServerState()
        # What HTTP protocols are built with: self.state, then, from the stop
        # on, a copy whose default headers end with Connection: close.
        self._http_state = self.state
        self.lifespan = _Lifespan(config)
        self.connections = OpenTransports(
            self._activity,
            self._close_idle,
            self._watch_response,
            min(_FIRST_REQUEST_GRACE, config.timeout_keep_alive),
        )
        self._http_class = _reporting(config.http_protocol_class, self.connections.lost)
        # The protocol an upgraded connection is handed to comes from the config.
        ws_class = config.ws_protocol_class
        if ws_class is not None:
            ws_class = _closing_after_the_app(
                ws_class, self.connections, close_answer_wait, self.state
            )
            config.ws_protocol_class = _reporting(ws_class, self.connections.lost)
        self._refresh_headers()
        self._headers_scope = anyio.CancelScope()
        self._quiet = _QuietWhenCut()

    def _refresh_headers(self) -> None:
        config = self._config
        date = [(b"date", formatdate(time.time(), usegmt=True).encode())]
        headers = date if config.date_header else []
        self.state.default_headers = headers + config.encoded_headers
        if self._http_state is not self.state:
            self._http_state.default_headers = [*self.state.default_headers, _CLOSE]

    def close_http1_after_each_response(self) -> None:
        """From now on, each response carries ``Connection: close`` and its
        connection closes after it (uvicorn does both once the header is
        there); websocket handshakes do not. Nothing is added per request
        before this is called: the protocols' state is swapped here."""
        if self._http_state is not self.state:
            return
        # A shallow copy: the same sets of connections and request tasks.
        closing = self._http_state = copy.copy(self.state)
        closing.default_headers = [*self.state.default_headers, _CLOSE]
        for transport in self.connections:
            protocol = transport.get_protocol()
            if not isinstance(protocol, self._http_class):
                continue  # a websocket
            http = cast("_HttpProtocol", protocol)
            http.server_state = closing  # the requests it parses from now on
            cycles = [http.cycle, *(c for c, _ in getattr(protocol, "pipeline", ()))]
            for cycle in cycles:  # those read already, not answered yet
                if cycle is not None and not cycle.response_started:
                    cycle.default_headers = closing.default_headers

    async def keep_headers_fresh(self) -> None:
        """Keep the Date header current, as uvicorn's main loop does; until
        ``end``."""
        with self._headers_scope:
            while True:
                await anyio.sleep(_HEADERS_REFRESH)
                self._refresh_headers()

    def _new_protocol(self) -> asyncio.Protocol:
        # As uvicorn's Server.startup() builds them.
        return self._http_class(  # type: ignore[call-arg]
            config=self._config,
            server_state=self._http_state,
            app_state=self.lifespan.state,
            _loop=self._loop,
        )

    async def handle(self, conn: socket.socket) -> None:
        """Hand an accepted connection to a protocol; ``conn`` is its from now on.

        Returns once the transport is made: the event loop serves the
        connection, and ``connections`` keeps it until it is lost.
        """
        try:
            if conn.family in (socket.AF_INET, socket.AF_INET6):
                # As uvicorn's own server has it (asyncio sets it only for
                # sockets made with proto=IPPROTO_TCP): a response written in
                # two parts must not wait for the client's delayed ACK.
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            transport, _ = await self._loop.connect_accepted_socket(
                self._new_protocol, conn
            )
        except BaseException:
            conn.close()
            raise
        # Added before the loop can call connection_lost: the transport reads
        # only after connect_accepted_socket has woken this task.
        self.connections.add(transport, conn)

    def _activity(self, transport: asyncio.BaseTransport) -> Activity:
        protocol = transport.get_protocol()
        if transport.is_closing() or not isinstance(protocol, self._http_class):
            return Activity.OTHER  # a websocket: ShutdownMiddleware closes it
        cycle = cast("_HttpProtocol", protocol).cycle
        if cycle is None:
            return Activity.NEW
        return Activity.IDLE if cycle.response_complete else Activity.BUSY

    def _watch_response(self, transport: asyncio.BaseTransport) -> None:
        # Busy in the drain: judged again once its response is complete (after
        # uvicorn has begun a request pipelined behind it). Hooked here, not
        # in the protocol class: no call added to every response.
        cycle = cast("_HttpProtocol", transport.get_protocol()).cycle
        if cycle is None:  # pragma: no cover -- BUSY means a cycle
            return
        complete = cycle.on_response
        responded = self.connections.responded

        def then_judge() -> None:
            try:
                complete()
            finally:
                responded(transport)

        cycle.on_response = then_judge

    def _close_idle(self, transport: asyncio.BaseTransport) -> None:
        # uvicorn's own shutdown() closes an idle connection at once (one whose
        # response is not complete would only lose its keep-alive).
        cast("_HttpProtocol", transport.get_protocol()).shutdown()

    async def drain(self) -> None:
        """The drain has begun (the listeners are closed): what ends from now
        on ends for good (a websocket's close waits only so long)."""
        self.connections.drain()

    async def close_connections(self) -> None:
        """Close every connection once idle, busy ones after their response
        (keep-alive ends); return when all have ended. Cancelled (the drain
        deadline), those still open are reset."""
        await self.connections.close_all()

    async def wait_requests(self) -> None:
        """Wait for the app's request tasks (one whose client left may still run)."""
        while self.state.tasks:
            await asyncio.wait(set(self.state.tasks))

    def cancel_requests(self) -> None:
        """Cancel the app's request tasks still running (cut by the deadline)."""
        # Cut at the drain deadline, which the scope reports by the request's
        # label: uvicorn would log each as the app's error, with a traceback.
        _UVICORN_ERROR.addFilter(self._quiet)
        for task in self.state.tasks:
            task.cancel()

    def end(self) -> None:
        """Stop the background work (the lifespan task, the header refresh) and
        reset the connections still open (a failure cut the drain short)."""
        self.connections.abort_all()
        _UVICORN_ERROR.removeFilter(self._quiet)
        self._headers_scope.cancel()
        self.lifespan.end()
