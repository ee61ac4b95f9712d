"""The keep-alive timers of every connection of a server, kept by one task.

hypercorn gives each connection an "idle task" whenever it is idle: a task
that waits for the keep-alive timeout or the drain, then closes it. With
thousands of idle connections that is a task, a lock, a timer, cancel scopes
and (on asyncio) a second task for each: about 4 KB per idle connection. Here
one task keeps the deadlines of all of them in one dict, and a connection
whose time is up (or every idle one, once the drain begins) is closed by a
task spawned then, in that connection's own task group.
"""

from __future__ import annotations

import math
from contextlib import suppress
from typing import TYPE_CHECKING, Protocol

import anyio

if TYPE_CHECKING:
    from ._hypercorn_compat import ConnectionTasks

__all__ = ["IdleByClock", "IdleConnection", "IdleTimer", "KeepAliveClock"]


class IdleConnection(Protocol):
    """A connection the clock can close."""

    def close_as_idle(self) -> None:
        """Begin closing it (spawn the close; do not wait for it)."""


class KeepAliveClock:
    """Closes connections idle for ``timeout`` seconds, or all idle ones at the drain.

    ``idle(conn)`` starts (or restarts) a connection's timer, ``busy(conn)``
    stops it; ``run()`` is the one task that closes those due.
    """

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        # Deadlines in insertion order, which is deadline order: the timeout
        # is the same for every connection and the clock only moves forward.
        self._deadlines: dict[IdleConnection, float] = {}
        self._draining = False
        self._woken: anyio.Event | None = None

    def idle(self, conn: IdleConnection) -> None:
        """``conn`` is idle from now on (its timer restarts)."""
        self._deadlines.pop(conn, None)
        if self._draining:
            conn.close_as_idle()
            return
        # This deadline is after every other: the clock needs waking only if
        # it had none (then it waits for one, not polling every timeout: a
        # keep_alive_timeout of 0 made that a busy loop).
        self._deadlines[conn] = anyio.current_time() + self._timeout
        if len(self._deadlines) == 1 and self._woken is not None:
            self._woken.set()

    def busy(self, conn: IdleConnection) -> None:
        """``conn`` is not idle (a request came, or it is closing)."""
        self._deadlines.pop(conn, None)

    def drain(self) -> None:
        """Close every idle connection now, and each one as soon as it is idle."""
        self._draining = True
        if self._woken is not None:
            self._woken.set()

    async def run(self) -> None:
        """Close the connections whose time is up, until cancelled."""
        while True:
            now = anyio.current_time()
            self._close_due(now)
            # With none idle, wait for one (idle() wakes the clock); in the
            # drain none comes (idle() closes it at once).
            first = next(iter(self._deadlines.values()), math.inf)
            self._woken = anyio.Event()
            with anyio.move_on_after(first - now):
                await self._woken.wait()
            self._woken = None

    def _close_due(self, now: float) -> None:
        # A method of its own: a connection kept in a local of run() while it
        # sleeps would stay in memory after it closed.
        while self._deadlines:
            conn, deadline = next(iter(self._deadlines.items()))
            if deadline > now and not self._draining:
                return
            del self._deadlines[conn]
            conn.close_as_idle()


class IdleTimer:
    """A TCPServer's ``idle_task`` (hypercorn's name): the clock, for one connection.

    hypercorn calls ``restart()`` when the connection turns idle and ``stop()``
    when a request comes or it closes (the task group and action it passes are
    those of its own idle task, not used).
    """

    __slots__ = ("_clock", "_conn")

    def __init__(self, clock: KeepAliveClock, conn: IdleConnection) -> None:
        self._clock = clock
        self._conn = conn

    async def restart(self, task_group: object, action: object) -> None:  # noqa: ARG002
        self._clock.idle(self._conn)

    async def stop(self) -> None:
        self._clock.busy(self._conn)


class IdleByClock:
    """For a hypercorn TCPServer: the worker's keep-alive clock is its idle task."""

    _keep_alive: KeepAliveClock
    _task_group: ConnectionTasks  # hypercorn's, of this connection
    _reading_over = False  # set once nothing more can be read
    if TYPE_CHECKING:

        async def _initiate_server_close(self) -> None: ...

    @property
    def idle_task(self) -> IdleTimer:
        return IdleTimer(self._keep_alive, self)

    @idle_task.setter
    def idle_task(self, _: object) -> None:
        pass  # hypercorn's own (a task per idle spell): the clock instead

    def close_as_idle(self) -> None:
        if self._reading_over:
            return  # it is ending by itself
        with suppress(RuntimeError):  # its task group is being cancelled
            self._task_group.spawn(self._close_as_idle)

    async def _close_as_idle(self) -> None:
        with anyio.CancelScope(shield=True):  # as hypercorn's; bounded by _may_close
            await self._initiate_server_close()
