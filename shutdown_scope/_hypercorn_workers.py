"""hypercorn's per-connection servers and lifespan, driven from anyio.

hypercorn has one implementation of the protocols and two of the I/O around
them (``hypercorn.asyncio`` and ``hypercorn.trio``). Its ``serve()`` owns the
accept loop, which closes listeners with clients still queued and, on asyncio,
leaves connection tasks outside any task group (so they cannot be cancelled at
a deadline). We keep hypercorn's ``TCPServer`` and ``Lifespan`` classes and own
everything around them; this module is the only place that knows which of
hypercorn's two trees runs.
"""

from __future__ import annotations

import socket
from contextlib import suppress
from typing import TYPE_CHECKING, cast

import anyio
import anyio.lowlevel
import h11
import sniffio
from anyio.abc import TaskGroup, TaskStatus

from ._heap import DrainHeap
from ._hypercorn_compat import (
    AppWrapper,
    Config,
    ConnectionContext,
    LifespanState,
    WorkerContext,
    asyncio_tree,
    h11_connection,
    kernel_has_bytes,
    refuse_requests,
    trio_tree,
    watch_lifespan_failed,
)
from ._hypercorn_h2 import Http2ByGoaway, begin_goaway
from ._keep_alive import IdleByClock, KeepAliveClock

if TYPE_CHECKING:
    import trio

    from ._hypercorn_compat import (
        AsyncioLifespan,
        AsyncioWorkerContext,
        Lifespan,
        TCPServer,
        TCPServerT,
        TrioLifespan,
        TrioWorkerContext,
    )

__all__ = ["Worker", "current_worker"]

# Rounds of the scheduler an idle connection gives its reader before it is
# closed: bytes already received must be parsed first (see _may_close); a
# request still incomplete after them is a stalled one.
_READER_ROUNDS = 10
# A connection that has not sent a request yet when the drain begins: how long
# after its accept it may still send its first one (it connected while we were
# listening, perhaps from the accept queue as the listener closed).
_FIRST_REQUEST_GRACE = 1.0
_FIRST_REQUEST_POLL = 0.01


class _ClosedIdleError(Exception):
    """A request arrived on a connection already being closed as idle."""


class _ReaderGrace:
    """Scheduler rounds given to the readers of connections about to close as idle.

    One task counts the rounds for every connection that asks at about the
    same time (the drain closes them all at once): each waits for one event
    instead of running its own rounds, which with thousands of connections
    made every round cost a step of each of them.
    """

    def __init__(self) -> None:
        self._over: anyio.Event | None = None
        self._rounds_left = 0

    async def wait(self) -> None:
        """Return after at least ``_READER_ROUNDS`` rounds from this call."""
        self._rounds_left = _READER_ROUNDS  # a late caller gets its rounds too
        if self._over is not None:
            await self._over.wait()
            return
        over = self._over = anyio.Event()
        try:
            while self._rounds_left > 0:
                self._rounds_left -= 1
                await anyio.lowlevel.checkpoint()
        finally:
            self._over = None
            over.set()


def _guarded(
    base: type[TCPServerT], grace: _ReaderGrace, keep_alive: KeepAliveClock
) -> type[TCPServerT]:
    """``base`` (one of hypercorn's TCPServer classes), made safe for the drain.

    Instances take a ``ConnectionContext`` as their context; ``grace`` and
    ``keep_alive`` are shared by the worker's connections.
    """

    class Server(Http2ByGoaway, IdleByClock, base):  # type: ignore[misc,valid-type]
        _reading: anyio.CancelScope | None = None
        _keep_alive = keep_alive

        async def _initiate_server_close(self) -> None:
            # hypercorn's idle timeout (at keep_alive_timeout, or at once when
            # the drain begins) waits its own way, then calls this, shielded.
            if begin_goaway(self.protocol.protocol):
                return  # HTTP/2: closed by GOAWAY once its streams are done
            if not await _may_close(self, self._conn, grace, self.context.accepted_at):
                return
            # Decided to close: a request that still gets parsed (its bytes were
            # on their way) must not reach the app, whose answer would go
            # nowhere. The client sees an idle connection closed.
            refuse_requests(self.protocol.protocol, _ClosedIdleError)
            await super()._initiate_server_close()

        async def _read_data(self) -> None:
            try:
                with anyio.CancelScope() as self._reading, suppress(_ClosedIdleError):
                    await super()._read_data()
            finally:
                # Nothing to cancel once it is over (and anyio's cancel() of a
                # scope names the task: a repr per connection at the drain).
                self._reading = None
                self._reading_over = True
                keep_alive.busy(self)  # nothing more to read: not idle

        async def _close(self) -> None:
            # The connection is being closed (by the protocol, after a response
            # during the drain): a reader waiting for a next request that will
            # never be served (h11 PAUSED) must not wait on.
            try:
                await super()._close()
            finally:
                # Closed: not idle, whatever turned it idle after its reader
                # ended (a response done after a reset). asyncio's _close stops
                # hypercorn's idle task; trio's does not, and the clock would
                # hold the connection until its timeout.
                keep_alive.busy(self)
                if self._reading is not None:
                    self._reading.cancel()

    return Server


async def _may_close(
    server: TCPServer, conn: socket.socket, grace: _ReaderGrace, accepted_at: float
) -> bool:
    """Whether an idle connection can be closed without losing a request.

    hypercorn closes a connection that is idle when the drain begins (or after
    ``keep_alive_timeout``). Its check races with a request that has just
    arrived: the bytes are read but not yet parsed, and the connection is
    closed under it. Here the reader gets a few rounds first (``grace``, shared
    by the connections closing together; more, its own, for a connection with
    bytes still unread), and a connection that has a request, or unread bytes,
    is left to finish it (hypercorn then closes it after the response, since
    the drain has begun).
    """
    connection = h11_connection(server)
    if connection is not None and connection.their_http_version is None:
        # No request yet: it connected while we listened (maybe just before
        # the listener closed); give it a moment to send one.
        give_up = accepted_at + min(
            _FIRST_REQUEST_GRACE, server.config.keep_alive_timeout
        )
        while anyio.current_time() < give_up and conn.fileno() != -1:
            if connection.their_state is not h11.IDLE:
                return False  # it came: hypercorn closes after answering it
            await anyio.sleep(_FIRST_REQUEST_POLL)
    await grace.wait()
    for _ in range(_READER_ROUNDS):
        if not kernel_has_bytes(conn):
            break
        await anyio.lowlevel.checkpoint()  # the reader takes them next
    # A whole request arrived: hypercorn closes after answering it. Otherwise
    # idle, or a request that stalls half-way (slowloris): it holds nothing.
    connection = h11_connection(server)
    return connection is None or connection.their_state is h11.IDLE


class Worker:
    """What ``shutdown_scope.hypercorn.serve`` needs from a hypercorn worker.

    The lifespan task runs shielded, so that a service cancelled at the drain
    deadline can still run the app's lifespan shutdown (bounded by the caller);
    ``end_lifespan`` then ends it.
    """

    context: WorkerContext  # hypercorn's, of the tree that runs
    lifespan: Lifespan  # hypercorn's, of the tree that runs

    def __init__(self, app: AppWrapper, config: Config) -> None:
        self.app = app
        self.config = config
        self.state: LifespanState = {}
        self._lifespan_scope = anyio.CancelScope(shield=True)
        self._lifespan_ended = False
        self._lifespan_end = anyio.Event()
        self._lifespan_failed = False
        self._stop_begun = False
        self.heap = DrainHeap()  # thawed by the caller once the server is done
        self.keep_alive = KeepAliveClock(config.keep_alive_timeout)
        self._keep_alive_scope = anyio.CancelScope()

    async def _run_lifespan(self, *, task_status: TaskStatus[None]) -> None:
        raise NotImplementedError

    async def handle(self, conn: socket.socket) -> None:
        """Serve one accepted connection until it closes; closes ``conn``."""
        raise NotImplementedError

    async def _shielded_lifespan(self, *, task_status: TaskStatus[None]) -> None:
        try:
            with self._lifespan_scope:
                await self._run_lifespan(task_status=task_status)
        except Exception:
            self._lifespan_failed = True
            raise
        finally:
            self._lifespan_ended = True
            self._lifespan_end.set()

    async def _run_keep_alive(self) -> None:
        with self._keep_alive_scope:
            await self.keep_alive.run()

    def _watch_startup(self) -> None:
        watch_lifespan_failed(self.lifespan, self._lifespan_failure)

    def _lifespan_failure(self) -> None:
        self._lifespan_failed = True

    async def start_lifespan(self, tasks: TaskGroup) -> None:
        """Run the app's lifespan in ``tasks``; return once startup is complete.

        A failed startup (``lifespan.startup.failed``) ends the lifespan task
        with hypercorn's error, which fails ``tasks``: this never returns then.
        """
        await tasks.start(self._shielded_lifespan, name="hypercorn lifespan")
        tasks.start_soon(self._run_keep_alive, name="hypercorn keep-alive")
        await self.lifespan.wait_for_startup()
        if self._lifespan_failed:
            # The lifespan task ends with hypercorn's error, which cancels
            # this wait: serving never begins, and that error is the one seen.
            await self._lifespan_end.wait()
            for _ in range(_READER_ROUNDS):  # for the task group to see it
                await anyio.lowlevel.checkpoint()
            # The app swallowed hypercorn's error, yet it said startup failed.
            msg = "the app sent lifespan.startup.failed"  # pragma: no cover
            raise RuntimeError(msg)  # pragma: no cover

    async def stop_lifespan(self) -> None:
        """Run the lifespan shutdown; if it has begun already, wait for its end."""
        if self._lifespan_ended:
            return
        if not self._stop_begun:
            self._stop_begun = True
            await self.lifespan.wait_for_shutdown()
            if self._lifespan_failed:
                # hypercorn's error is on its way out of the lifespan task
                # (on trio, past a checkpoint): ending the task now would
                # cancel it, and the failed shutdown would look clean.
                await self._lifespan_end.wait()
        else:
            await self.lifespan.shutdown.wait()

    def end_lifespan(self) -> None:
        """End the lifespan task (after its shutdown, or giving up on it).

        The keep-alive clock ends too: every connection has ended by then.
        """
        self._lifespan_scope.cancel()
        self._keep_alive_scope.cancel()

    async def terminate(self) -> None:
        """The drain has begun: close idle connections, end keep-alive."""
        self.heap.freeze()
        await self.context.terminated.set()
        self.keep_alive.drain()


class _AsyncioWorker(Worker):
    lifespan: AsyncioLifespan

    def __init__(self, app: AppWrapper, config: Config) -> None:
        import asyncio

        tree = asyncio_tree()
        super().__init__(app, config)
        self._loop = asyncio.get_running_loop()
        self.context = tree.worker_context(None)
        self.lifespan = tree.lifespan(app, config, self._loop, self.state)
        self._watch_startup()
        self._server_class = _guarded(tree.tcp_server, _ReaderGrace(), self.keep_alive)

    async def _run_lifespan(self, *, task_status: TaskStatus[None]) -> None:
        task_status.started()
        await self.lifespan.handle_lifespan()

    async def handle(self, conn: socket.socket) -> None:
        import asyncio

        loop = self._loop
        try:
            reader = asyncio.StreamReader(loop=loop)
            protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
            transport, _ = await loop.connect_accepted_socket(lambda: protocol, conn)
        except BaseException:
            conn.close()
            raise
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        context = ConnectionContext(self.context, conn)
        # hypercorn's TCPServer uses only what its WorkerContext protocol has.
        hypercorns_context = cast("AsyncioWorkerContext", context)
        server = self._server_class(
            self.app, loop, self.config, hypercorns_context, self.state, reader, writer
        )
        context.terminated.server = server
        await server.run()


class _TrioWorker(Worker):
    lifespan: TrioLifespan

    def __init__(self, app: AppWrapper, config: Config) -> None:
        tree = trio_tree()
        super().__init__(app, config)
        self.context = tree.worker_context(None)
        self.lifespan = tree.lifespan(app, config, self.state)
        self._watch_startup()
        self._server_class = _guarded(tree.tcp_server, _ReaderGrace(), self.keep_alive)

    async def _run_lifespan(self, *, task_status: TaskStatus[None]) -> None:
        await self.lifespan.handle_lifespan(task_status=task_status)

    async def handle(self, conn: socket.socket) -> None:
        import trio

        try:
            stream = trio.SocketStream(trio.socket.from_stdlib_socket(conn))
        except BaseException:
            conn.close()
            raise
        context = ConnectionContext(self.context, conn)
        # hypercorn's TCPServer uses only what its WorkerContext protocol has,
        # and takes a plain stream as well as a TLS one (no handshake to do).
        server = self._server_class(
            self.app,
            self.config,
            cast("TrioWorkerContext", context),
            self.state,
            cast("trio.SSLStream[trio.SocketStream]", stream),
        )
        context.terminated.server = server
        await server.run()


def current_worker(app: AppWrapper, config: Config) -> Worker:
    """The hypercorn worker for the event loop this runs on."""
    library = sniffio.current_async_library()
    if library == "trio":
        return _TrioWorker(app, config)
    if library == "asyncio":
        return _AsyncioWorker(app, config)
    msg = f"shutdown_scope.hypercorn serves on asyncio or trio, not {library}"
    raise RuntimeError(msg)
