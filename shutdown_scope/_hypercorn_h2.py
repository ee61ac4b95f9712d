"""hypercorn's HTTP/2 connection, drained as RFC 9113 (section 6.8) describes.

Verified with hypercorn 0.18.0 and 0.17.3, with h2 4.4 (``hypercorn.protocol.h2``,
whose internals this module extends; pyproject pins ``hypercorn<0.19``). With h2
4.2 and later, hypercorn 0.17.3 itself fails every ``Upgrade: h2c``.
hypercorn's own HTTP/2 shutdown cuts instead of draining:

- a stream opened during the drain is reset with NO_ERROR (which a client
  cannot safely retry) and SETTINGS_MAX_CONCURRENT_STREAMS is set to 0; GOAWAY
  comes only once the connection is idle, and an idle connection is closed
  without any;
- that GOAWAY is h2's ``close_connection()``, after which h2 refuses to send
  anything: the DATA and END_STREAM still queued for finished responses are
  dropped (on trio, where the socket write lets the app run first, responses are
  cut after their HEADERS);
- a client that goes away, or resets a stream whose response waits for its
  flow-control window, leaves the app waiting for its body to be sent (nothing
  wakes it): its last ``send`` hangs;
- a DATA frame on a stream already answered (a KeyError), PRIORITY frames for
  a thousand streams, or as many streams opened and reset in one batch (rapid
  reset; priority's TooManyStreamsError), or a plain CONNECT request (an
  UnboundLocalError) end the connection's task with an error, and with it
  ``serve()``;
- a connection with no stream open is never timed out if it has had none
  (the preface only) or if hypercorn answered its last stream by itself.

``GracefulH2Protocol`` is hypercorn's ``H2Protocol`` with those fixed. When the
drain begins (or the connection has idled for ``keep_alive_timeout``, or served
``keep_alive_max_requests``): a PING and a GOAWAY with the last stream id
2^31-1; once the PING is answered (a round trip: streams the client opened
before it saw the GOAWAY have arrived), or after ``_ACK_WAIT``, a GOAWAY naming
the highest stream accepted. Streams above it are ignored; the client retries
them elsewhere. Accepted streams run to the end of their responses; then the
server half-closes the connection (the client reads every byte, then the end)
and closes it once the client has, or after ``_LINGER``. The GOAWAY frames are
written directly: after h2's own, h2 would send none of the responses still due.

Clients built on the h2 library (httpx, httpcore) treat every frame after a
GOAWAY but another GOAWAY as a protocol error (encode/httpcore#46): their
requests in flight when the drain begins fail there, as they do with nginx.
Frames are ordered so that nothing else breaks them: the PING precedes the
first GOAWAY, and a stream above the final one is ignored, not reset, so
httpcore retries it on a new connection.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, suppress

import anyio
import h2.events
import h2.exceptions
from hyperframe.frame import GoAwayFrame
from priority.priority import MissingStreamError

from ._hypercorn_compat import (
    AppWrapper,
    Closed,
    Config,
    ConnectionContext,
    ConnectionState,
    Event,
    H2Protocol,
    H11Protocol,
    ProtocolWrapper,
    RawData,
    StreamClosed,
    StreamEvent,
    TaskGroup,
    Updated,
    WorkerContext,
)

__all__ = ["CloseOutput", "Http2ByGoaway", "begin_goaway"]

CloseOutput = Callable[[], Awaitable[None]]
"""Half-closes the connection: sends what is buffered, then the end of the data."""

_LAST_POSSIBLE_STREAM = 2**31 - 1
_PING_DATA = b"shutdown"  # PING's opaque data: 8 bytes
# How long the client has to answer the PING sent with the first GOAWAY (a
# round trip) before the final GOAWAY; streams it opens after that are ignored.
_ACK_WAIT = 1.0
# After the server's half-close, how long the client has to close its end.
_LINGER = 1.0
_NOT_IMPLEMENTED = [(b":status", b"501"), (b"content-length", b"0")]


def _goaway(last_stream_id: int) -> bytes:
    return GoAwayFrame(stream_id=0, last_stream_id=last_stream_id).serialize()


class GracefulH2Protocol(H2Protocol):
    """hypercorn's HTTP/2 connection, closed with GOAWAY once its streams are done.

    Args:
        close_output: half-closes the connection (the server's side).
        Other arguments: hypercorn's ``H2Protocol``.
    """

    def __init__(  # noqa: PLR0917 -- hypercorn's signature, then ours
        self,
        app: AppWrapper,
        config: Config,
        context: WorkerContext,
        task_group: TaskGroup,
        connection_state: ConnectionState,
        ssl: bool,  # noqa: FBT001 -- hypercorn's signature
        client: tuple[str, int] | None,
        server: tuple[str, int] | None,
        send: Callable[[Event], Awaitable[None]],
        *,
        close_output: CloseOutput,
    ) -> None:
        super().__init__(
            app,
            config,
            context,
            task_group,
            connection_state,
            ssl,
            client,
            server,
            send,
        )
        self._close_output = close_output
        self._highest_accepted = 0  # the last stream the client opened, served
        # None until the final GOAWAY: then the streams above it are ignored.
        self._last_stream_id: int | None = None
        self._ping_acked = anyio.Event()
        self._changed = anyio.Event()
        self._goaway_due = anyio.CancelScope()  # cancelled: GOAWAY now
        self._open = anyio.CancelScope()  # cancelled when the connection closes
        # What the keep-alive timer was last told: busy, as hypercorn's HTTP/1.1
        # told it for the preface (or h2c upgrade) that switched to HTTP/2.
        self._told_idle = False

    @classmethod
    def replacing(
        cls, hypercorns: H2Protocol, close_output: CloseOutput
    ) -> GracefulH2Protocol:
        """This class, built with the arguments hypercorn gave its own."""
        return cls(
            hypercorns.app,
            hypercorns.config,
            hypercorns.context,
            hypercorns.task_group,
            hypercorns.connection_state,
            hypercorns.ssl,
            hypercorns.client,
            hypercorns.server,
            hypercorns.send,
            close_output=close_output,
        )

    def begin_goaway(self) -> None:
        """Close this connection gracefully: GOAWAY, then the rest."""
        self._goaway_due.cancel()

    async def initiate(
        self,
        headers: list[tuple[bytes, bytes]] | None = None,
        settings: bytes | None = None,
    ) -> None:
        """Start the connection (hypercorn's), and watch for the drain."""
        if headers is not None:  # an upgrade: its request is stream 1
            self._highest_accepted = 1
        await super().initiate(headers, settings)
        self.task_group.spawn(self._close_when_due)
        # Only the preface, no stream: idle now, or it is never timed out.
        await self._tell_idle()

    async def _close_when_due(self) -> None:
        with self._open:
            with self._goaway_due:
                await self.context.terminated.wait()
            await self._goaway()

    async def _goaway(self) -> None:
        # The PING goes first, in the same write: its answer comes a round trip
        # after the GOAWAY left, and clients built on h2 (httpx) fail on any
        # frame but a GOAWAY after a GOAWAY.
        with suppress(h2.exceptions.ProtocolError):  # h2 closed it (an error)
            self.connection.ping(_PING_DATA)
        first = self.connection.data_to_send() + _goaway(_LAST_POSSIBLE_STREAM)
        await self.send(RawData(data=first))
        with anyio.move_on_after(_ACK_WAIT):
            await self._ping_acked.wait()
        self._last_stream_id = self._highest_accepted
        await self.send(RawData(data=_goaway(self._last_stream_id)))
        # Every stream's response sent, to its END_STREAM (hypercorn deletes a
        # stream's buffer once that is written).
        while self.streams or self.stream_buffers:
            await self._changed.wait()
        await self._close_output()
        await anyio.sleep(_LINGER)  # the client closes after reading the end
        await self.send(Closed())

    def _poke(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def handle(self, event: Event) -> None:
        """Data from the client, or the connection closed."""
        if isinstance(event, Closed):
            # hypercorn's sender stops; an app still sending a body would wait
            # for it forever: its stream buffers are closed, so its sends return.
            self.closed = True
            for buffer in list(self.stream_buffers.values()):
                await buffer.close()
            self._open.cancel()
        await super().handle(event)
        await self._tell_idle()  # streams opened, reset, or ended in this batch
        self._poke()

    async def _tell_idle(self) -> None:
        # The keep-alive timer runs while no stream is open. Only changes are
        # told: it restarts when the last stream ends, not at every frame (a
        # client's PINGs keep no connection open). A stream hypercorn answered
        # by itself (404 for a server name, a bad websocket handshake) is
        # closed but never leaves self.streams: dropped, or it stays busy.
        if self.closed:
            return  # the TCPServer stopped its timer for good
        for stream_id in [i for i, s in self.streams.items() if s.closed]:
            del self.streams[stream_id]
        idle = all(stream.idle for stream in self.streams.values())
        if idle is not self._told_idle:
            self._told_idle = idle
            await self.send(Updated(idle=idle))

    async def stream_send(self, event: StreamEvent) -> None:
        """What one stream (its app) sends."""
        if isinstance(event, StreamClosed):
            # Not hypercorn's, which closes the connection with h2 (the
            # responses still buffered would not be sent) in a drain.
            await self._close_stream(event.stream_id)
            await self._tell_idle()
            self._poke()
            return
        await super().stream_send(event)

    async def _send_data(self, stream_id: int) -> None:
        with suppress(KeyError):  # its stream was reset while this waited
            await super()._send_data(stream_id)
        self._poke()  # a response may have been sent to its end

    async def _handle_events(self, events: list[h2.events.Event]) -> None:
        ignored: set[int] = set()
        for event in events:
            stream_id = getattr(event, "stream_id", None)
            if isinstance(event, h2.events.RequestReceived):
                assert stream_id is not None
                await self._open_stream(event, stream_id, ignored)
            elif stream_id in ignored:
                pass  # the rest of an ignored stream's frames in this batch
            elif isinstance(event, h2.events.PingAckReceived):
                self._ping_acked.set()  # ours: the server sends no other PING
            elif isinstance(event, h2.events.StreamReset):
                await super()._handle_events([event])
                assert stream_id is not None
                await self._drop_reset_stream(stream_id)
            elif isinstance(event, h2.events.DataReceived) and (
                stream_id not in self.streams
            ):
                # Request body for a stream already answered: not an error
                # (RFC 9113, 8.1); its flow-control credit goes back.
                assert stream_id is not None
                length = event.flow_controlled_length or 0
                self.connection.acknowledge_received_data(length, stream_id)
            else:
                await super()._handle_events([event])
        await self._flush()

    async def _drop_reset_stream(self, stream_id: int) -> None:
        # hypercorn leaves a response the client reset waiting for a window
        # that never opens, and its app in its last send: the buffer is closed
        # (the app's sends return). The stream leaves the priority tree now,
        # not when the sender next runs: a batch of HEADERS and RST_STREAM
        # pairs (rapid reset) would fill the tree first, and its 1001st
        # stream would fail the connection with TooManyStreamsError.
        buffer = self.stream_buffers.pop(stream_id, None)
        if buffer is not None:
            await buffer.close()
            with suppress(MissingStreamError):
                self.priority.remove_stream(stream_id)

    async def _open_stream(
        self, event: h2.events.RequestReceived, stream_id: int, ignored: set[int]
    ) -> None:
        if self._last_stream_id is not None and stream_id > self._last_stream_id:
            # Above the final GOAWAY's last stream: ignored, as RFC 9113 (6.8)
            # has it; the GOAWAY tells the client to retry it elsewhere. Not
            # RST_STREAM(REFUSED_STREAM): after a GOAWAY, clients built on h2
            # (httpx) fail on it, while they retry a stream the GOAWAY excludes.
            ignored.add(stream_id)
            return
        self._highest_accepted = stream_id  # h2 checks that ids increase
        if not any(name == b":path" for name, _ in event.headers or ()):
            # A plain CONNECT (RFC 9113, 8.5): hypercorn only knows websockets'
            # CONNECT, which has a path; without one it fails with an error.
            ignored.add(stream_id)
            self.connection.send_headers(stream_id, _NOT_IMPLEMENTED, end_stream=True)
            return
        await self._create_stream(event)
        await self._tell_idle()
        if self.keep_alive_requests > self.config.keep_alive_max_requests:
            self.begin_goaway()  # hypercorn's close_connection() would cut

    async def _priority_updated(self, event: h2.events.PriorityUpdated) -> None:
        # Priority signals are only hints (and deprecated, RFC 9113, 5.3.2).
        # Kept for open streams only: those for idle or closed ones would grow
        # hypercorn's priority tree until it refuses new streams with an error.
        open_streams = self.stream_buffers
        depends_on = event.depends_on or 0
        if event.stream_id in open_streams and (
            not depends_on or depends_on in open_streams
        ):
            # Both in the tree: no stream is added, hypercorn's code cannot fail.
            await super()._priority_updated(event)


class _ProtocolWrapper(ProtocolWrapper):
    """hypercorn's ProtocolWrapper, whose HTTP/2 protocol is ours."""

    def __init__(self, hypercorns: ProtocolWrapper, close_output: CloseOutput) -> None:
        self._close_output = close_output
        inner = hypercorns.protocol
        super().__init__(
            hypercorns.app,
            hypercorns.config,
            hypercorns.context,
            hypercorns.task_group,
            hypercorns.state,
            hypercorns.ssl,
            hypercorns.client,
            hypercorns.server,
            hypercorns.send,
            "h2" if isinstance(inner, H2Protocol) else None,
        )

    # hypercorn switches a connection to HTTP/2 (prior knowledge, or an h2c
    # upgrade) by assigning a new H2Protocol here: it is replaced with ours.
    @property
    def protocol(self) -> H11Protocol | H2Protocol:
        return self._protocol

    @protocol.setter
    def protocol(self, protocol: H11Protocol | H2Protocol) -> None:
        if type(protocol) is H2Protocol:
            protocol = GracefulH2Protocol.replacing(protocol, self._close_output)
        self._protocol = protocol


def begin_goaway(protocol: object) -> bool:
    """If ``protocol`` is our HTTP/2, begin its GOAWAY and return True.

    For hypercorn's idle close: an HTTP/2 connection is closed by GOAWAY, not
    cut, and its close waits for no stream (not even one that arrives now).
    """
    if not isinstance(protocol, GracefulH2Protocol):
        return False
    protocol.begin_goaway()
    return True


class Http2ByGoaway:
    """For a hypercorn TCPServer: HTTP/2 is served by our GracefulH2Protocol."""

    context: ConnectionContext
    _protocol: ProtocolWrapper
    send_lock: AbstractAsyncContextManager[None]

    @property
    def _conn(self) -> socket.socket:
        return self.context.conn

    @property
    def protocol(self) -> ProtocolWrapper:
        return self._protocol

    @protocol.setter
    def protocol(self, wrapper: ProtocolWrapper) -> None:
        # Set once, by hypercorn's run(), before the connection is read: the
        # one it built, with our HTTP/2.
        self._protocol = _ProtocolWrapper(wrapper, self._close_output)

    async def _close_output(self) -> None:
        """Half-close: the client reads all that was sent, then the end."""
        async with self.send_lock:  # after every write begun before
            writer = getattr(self, "writer", None)
            with suppress(OSError, RuntimeError):
                if writer is not None:  # asyncio: once the bytes it holds are sent
                    writer.write_eof()
                else:  # trio: the bytes are in the kernel once send_all returns
                    self._conn.shutdown(socket.SHUT_WR)
