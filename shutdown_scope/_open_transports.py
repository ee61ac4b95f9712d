"""The open connections of an asyncio protocol server, closed at the drain by one task.

A server that hands each accepted socket to an ``asyncio.Protocol`` (uvicorn's)
needs no task per connection while it serves: the event loop drives the
protocol. What the drain needs is kept here for all connections at once: one
dict entry per connection (its socket and accept time), and, once the drain
begins, one task that closes each connection as soon as it is idle, waits for
every connection to end, and resets those still open when it is cancelled (the
drain deadline). The server tells it what each connection is doing
(``Activity``); this module knows nothing of the server's protocols.
"""

from __future__ import annotations

import asyncio
import enum
import math
import socket
from collections.abc import Callable, Iterator

import anyio
import anyio.lowlevel

from ._listeners import abort_connection

__all__ = ["Activity", "OpenTransports"]

# Rounds of the scheduler a connection with bytes waiting in the kernel gets
# before it is judged at the drain: bytes already received must be parsed first.
_READER_ROUNDS = 10
# How often connections that have not sent a request yet are looked at again.
_FIRST_REQUEST_POLL = 0.01


class Activity(enum.Enum):
    """What a connection is doing, as far as the drain is concerned."""

    NEW = "no request yet"
    BUSY = "a request or response in progress"
    IDLE = "between requests"
    OTHER = "closing, or not HTTP any more (a websocket ends by itself)"


def _kernel_has_bytes(conn: socket.socket) -> bool:
    try:
        pending = conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except OSError:  # nothing to read (EAGAIN), or already closed or reset
        return False
    return bool(pending)


class OpenTransports:
    """Every open connection of one server; at the drain, closes the idle ones.

    The server calls ``add`` once a connection's transport is made and
    ``lost`` when it is gone; ``drain`` marks the drain's start, and
    ``close_all`` is the one task that closes the connections and waits for
    them. A connection judged busy in the drain is handed to ``watch_busy``,
    which calls ``responded`` once its response is complete: nothing is
    reported per response before the drain.

    Args:
        activity: what a connection is doing now.
        close_idle: close a connection judged idle (or new past its grace).
        watch_busy: call ``responded(transport)`` once the response in
            progress on ``transport`` is complete.
        first_request_grace: how long after its accept a connection that has
            not sent a request yet at the drain may still send its first one
            (it connected while the server listened, or queued).
    """

    def __init__(
        self,
        activity: Callable[[asyncio.BaseTransport], Activity],
        close_idle: Callable[[asyncio.BaseTransport], None],
        watch_busy: Callable[[asyncio.BaseTransport], None],
        first_request_grace: float,
    ) -> None:
        self._activity = activity
        self._close_idle = close_idle
        self._watch_busy = watch_busy
        self._grace = first_request_grace
        self._open: dict[asyncio.BaseTransport, tuple[socket.socket, float]] = {}
        # In the drain: the connections to look at, each with the rounds it
        # has been given for the bytes waiting in its kernel buffer.
        self._checking: dict[asyncio.BaseTransport, int] = {}
        self.draining = False
        self._woken: anyio.Event | None = None

    def __len__(self) -> int:
        return len(self._open)

    def __iter__(self) -> Iterator[asyncio.BaseTransport]:
        """The open transports (a copy: the loop may drop one meanwhile)."""
        return iter(list(self._open))

    def add(self, transport: asyncio.BaseTransport, conn: socket.socket) -> None:
        """A new connection, served by ``transport`` over ``conn``."""
        self._open[transport] = (conn, anyio.current_time())
        if self.draining:
            self._look_at(transport)

    def lost(self, transport: asyncio.BaseTransport) -> None:
        """``transport``'s connection is gone."""
        self._open.pop(transport, None)
        self._checking.pop(transport, None)
        if not self._open:
            self._wake()

    def responded(self, transport: asyncio.BaseTransport) -> None:
        """A response on ``transport`` is complete: in the drain, judge it again."""
        if self.draining and transport in self._open:
            self._look_at(transport)

    def drain(self) -> None:
        """The drain has begun: connections are judged once ``close_all`` runs."""
        self.draining = True

    def _look_at(self, transport: asyncio.BaseTransport) -> None:
        self._checking[transport] = 0
        self._wake()

    def _wake(self) -> None:
        if self._woken is not None:
            self._woken.set()

    async def close_all(self) -> None:
        """Close each connection once idle; return when every one has ended.

        A connection that has sent nothing yet gets the grace from its accept;
        bytes waiting in the kernel are parsed first; a busy one is judged again
        after its response (a request pipelined behind it is served). Cancelled
        (the drain deadline), the connections still open are reset.
        """
        self.drain()
        self._checking.update(dict.fromkeys(self._open, 0))
        try:
            while self._open:
                wait = self._judge()
                if wait == 0:
                    await anyio.lowlevel.checkpoint()
                    continue
                self._woken = anyio.Event()
                with anyio.move_on_after(wait):
                    await self._woken.wait()
                self._woken = None
        finally:
            self.abort_all()

    def _judge(self) -> float:
        """Close the connections found idle; how long until the next look."""
        now = anyio.current_time()
        wait = math.inf  # until a response completes or a connection ends
        for transport, rounds in list(self._checking.items()):
            conn, accepted_at = self._open[transport]
            activity = self._activity(transport)
            if activity is Activity.OTHER:
                del self._checking[transport]
            elif activity is Activity.NEW and now < accepted_at + self._grace:
                wait = min(wait, _FIRST_REQUEST_POLL)
            elif rounds < _READER_ROUNDS and _kernel_has_bytes(conn):
                self._checking[transport] = rounds + 1
                wait = 0
            else:
                del self._checking[transport]
                if activity is Activity.BUSY:  # judged again after its response
                    self._watch_busy(transport)
                else:
                    self._close_idle(transport)
        return wait

    def abort_all(self) -> None:
        """Reset every connection still open (cut by the deadline, or a failure).

        The transport's ``abort()`` alone drops only its own buffer: the
        kernel would still hold the connection, and its unsent bytes, for a
        client that stopped reading. The client gets a reset instead.
        """
        for transport, (conn, _) in list(self._open.items()):
            abort_connection(conn)
            if isinstance(transport, asyncio.WriteTransport):  # always: a socket's
                transport.abort()
