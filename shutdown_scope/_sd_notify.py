"""The notifier that tells systemd about a scope.

It speaks the sd_notify protocol (``_sd_protocol``, whose names are importable
from here too) while a ``graceful_scope`` is open; ``shutdown_scope.systemd`` is
the public face.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
from collections import Counter, deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Final

import anyio

from ._labels import printable_label
from ._manager_environ import manager_environ, take_notify_variables
from ._phases import Phase
from ._sd_protocol import (
    MANAGER_VARIABLES,
    decimal,
    encode_state,
    is_state_line,
    notify_address,
    send,
    watchdog_interval,
)
from ._sd_protocol import connect as _connect
from ._sd_protocol import failure as _failure

if TYPE_CHECKING:
    from ._report import ShutdownReport
    from ._state import ShutdownState

__all__ = [
    "MANAGER_VARIABLES",
    "ScopeNotifier",
    "decimal",
    "encode_state",
    "is_state_line",
    "notify_address",
    "open_scope_notifier",
    "send",
    "watchdog_interval",
]

logger = logging.getLogger("shutdown_scope")

# How often a heartbeat may go out during a shutdown, if there is news.
_HEARTBEAT: Final = 1.0
_LABELS_SHOWN: Final = 3
_LABEL_CHARS: Final = 40
_REASON_CHARS: Final = 200

# The notify socket belongs to the process, not to a scope: the outermost open
# scope holds this while it is open, and nested (or concurrent) ones stay quiet.
# Module state on purpose: it is process-wide by nature.
_CLAIM: Final = threading.Lock()


def _printable(text: str, limit: int) -> str:
    # A STATUS value is one line: labels and reasons come from users.
    text = "".join(c if c.isprintable() else " " for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _in_flight(labels: tuple[str, ...]) -> str:
    """``"3 in flight (a, b x2)"``: the count and the first few labels."""
    if not labels:
        return "nothing in flight"
    counts = list(Counter(labels).items())
    shown = [
        _printable(printable_label(label, None), _LABEL_CHARS)
        + ("" if n == 1 else f" x{n}")
        for label, n in counts[:_LABELS_SHOWN]
    ]
    more = ", ..." if len(counts) > _LABELS_SHOWN else ""
    return f"{len(labels)} in flight ({', '.join(shown)}{more})"


def _verdict(report: ShutdownReport) -> str:
    if report.clean:
        return "done: clean"
    why = []
    if report.cancelled_in_flight:
        why.append(f"cancelled {_in_flight(report.cancelled_in_flight)}")
    if report.errors:
        why.append(f"{len(report.errors)} error(s)")
    why.extend(
        f"{s.name} abandoned" for s in report.services if s.outcome == "abandoned"
    )
    why.extend(
        f"{s.name} stopped while starting"
        for s in report.services
        if s.stopped_while_starting
    )
    return _printable(f"done: NOT clean: {'; '.join(why)}", _REASON_CHARS)


class ScopeNotifier:
    """Tells the service manager about one scope (see ``graceful_scope``).

    Messages go out at once when the manager's queue has room, else in order
    from ``run()``'s task. A failure to send is logged once, and the scope goes
    on without notifications.
    """

    def __init__(
        self,
        sock: socket.socket,
        value: str,
        *,
        state: ShutdownState,
        watchdog: float | None,
    ) -> None:
        self._sock = sock  # connected, non-blocking
        self._value = value
        self._state = state
        self._watchdog = watchdog
        self._outbox: deque[str] = deque()
        self._queued = anyio.Event()
        self._failed = False
        self._tasks = anyio.CancelScope()  # run()'s, cancelled at DONE
        self._last: tuple[Phase, tuple[str, ...]] | None = None

    # -- what the scope tells it ------------------------------------------------

    def body_returned(self) -> None:
        """The body returned with no trigger: its services are up."""
        self._post("READY=1\nSTATUS=running")

    def phase_entered(self, phase: Phase, in_flight: tuple[str, ...]) -> None:
        """Subscribed to the state's phase events: the scope entered ``phase``."""
        if phase == Phase.DONE:
            self._tasks.cancel()  # finish() says the last word, with the report
            return
        self._last = (phase, in_flight)
        if phase == Phase.STOPPING:
            reason = _printable(self._state.reason or "", _REASON_CHARS)
            lines = ["STOPPING=1", f"STATUS=stopping: {reason}"]
        else:
            lines = [f"STATUS={phase.name.lower()}: {_in_flight(in_flight)}"]
        self._post("\n".join(lines + self._extend()))

    def finish(self, report: ShutdownReport) -> None:
        """The scope's last status. Sent now or never: the scope is over."""
        self._post(f"STATUS={_verdict(report)}")

    # -- its task ---------------------------------------------------------------

    async def run(self) -> None:
        """Send queued messages, heartbeats and watchdog pings until DONE."""
        with self._tasks:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._write)
                tg.start_soon(self._heartbeats)
                if self._watchdog is not None:
                    tg.start_soon(self._pings, self._watchdog)

    async def _write(self) -> None:
        while True:
            await self._queued.wait()
            self._queued = anyio.Event()
            while self._outbox:
                # Connected: writable once the manager's queue has room.
                await anyio.wait_writable(self._sock)
                self._flush()

    async def _pings(self, interval: float) -> None:
        # Timed by the event loop: a blocked loop stops them, which is the point.
        tick = anyio.current_time()
        while True:
            if "WATCHDOG=1" not in self._outbox:
                self._post("WATCHDOG=1")
            tick += interval
            await anyio.sleep_until(tick)

    async def _heartbeats(self) -> None:
        state = self._state
        await state.body.cell.wait(Phase.STOPPING)
        tick = anyio.current_time()
        while True:
            tick += _HEARTBEAT
            await anyio.sleep_until(tick)
            now = (state.phase, state.in_flight())
            if now != self._last:  # progress since the last word
                self._last = now
                status = f"STATUS={now[0].name.lower()}: {_in_flight(now[1])}"
                self._post("\n".join([status, *self._extend()]))

    # -- sending ------------------------------------------------------------------

    def _extend(self) -> list[str]:
        """``EXTEND_TIMEOUT_USEC=`` up to the end of the scope's budget, if any.

        Rounded down: the manager is never asked to wait past the moment the
        scope gives up (and its watchdog exits hard). None without a finite
        budget, or once it is spent.
        """
        left = self._state.final_deadline - anyio.current_time()
        usec = math.floor(left * 1_000_000) if math.isfinite(left) else 0
        return [f"EXTEND_TIMEOUT_USEC={usec}"] if usec > 0 else []

    def _post(self, state: str) -> None:
        if self._failed:
            return
        self._outbox.append(state)
        self._flush()
        if self._outbox:
            self._queued.set()

    def _flush(self) -> None:
        while self._outbox and not self._failed:
            try:
                self._sock.send(self._outbox[0].encode())
            except BlockingIOError:
                return  # the manager's queue is full: run() waits for room
            except OSError as exc:
                self._failed = True
                self._outbox.clear()
                self._tasks.cancel()
                logger.warning(
                    "shutdown_scope: %s; no more systemd notifications from this scope",
                    _failure(self._value, exc),
                )
                return
            self._outbox.popleft()


@contextmanager
def open_scope_notifier(
    state: ShutdownState, environ: Mapping[str, str]
) -> Iterator[ScopeNotifier | None]:
    """The scope's notifier: None without ``NOTIFY_SOCKET``, inside a scope that
    notifies already, or when the socket cannot be reached (logged once).

    From ``os.environ``, the variables are taken (``take_notify_variables``):
    the scope's child processes do not inherit them.
    """
    if environ is os.environ:
        take_notify_variables()
        environ = manager_environ()
    value = environ.get("NOTIFY_SOCKET", "")
    if not value or not _CLAIM.acquire(blocking=False):
        yield None
        return
    try:
        try:
            sock = _connect(value)
        except (OSError, ValueError) as exc:
            logger.warning(
                "shutdown_scope: %s; no systemd notifications from this scope", exc
            )
            yield None
            return
        with sock:
            sock.setblocking(False)  # noqa: FBT003 -- the stdlib signature
            try:
                interval = watchdog_interval(environ)
            except ValueError as exc:
                logger.warning("shutdown_scope: %s; no watchdog pings", exc)
                interval = None
            notifier = ScopeNotifier(sock, value, state=state, watchdog=interval)
            state.subscribe(notifier.phase_entered)
            yield notifier
    finally:
        _CLAIM.release()
