"""ShutdownToken: what a service sees of the shutdown, and in-flight tracking."""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol, TypeVar, final

import anyio

from ._phases import Phase

if TYPE_CHECKING:
    from ._take import Receiver, Take

T = TypeVar("T")

__all__ = ["FlightNode", "PhaseCell", "ScopeView", "ShutdownToken", "open_request"]

_monotonic = time.monotonic  # a global: no attribute lookup per request
_new_unit = object.__new__


class ScopeView(Protocol):
    """What a token reads of its scope's shutdown state (``_state.ShutdownState``)."""

    @property
    def reason(self) -> str | None: ...

    def deadline_for(self, phase: Phase) -> float:
        """When work in ``phase`` is cancelled, on anyio's clock."""

    def cleanup_bound(self) -> float:
        """The deadline of a cleanup that starts now."""


class PhaseCell:
    """One view of the phase: the scope's own, or one service's.

    The phase only moves forward; waiters and watching cancel scopes are woken
    when it reaches theirs. Only the scope's ``ShutdownState`` advances it.
    """

    __slots__ = ("_events", "_watchers", "phase")

    def __init__(self) -> None:
        self.phase: Phase = Phase.RUNNING
        self._events: dict[Phase, anyio.Event] = {}
        self._watchers: dict[anyio.CancelScope, Phase] = {}

    def advance(self, phase: Phase) -> None:
        if phase <= self.phase:
            return
        self.phase = phase
        for wanted in [p for p in self._events if p <= phase]:
            self._events.pop(wanted).set()
        for scope, wanted in list(self._watchers.items()):
            if wanted <= phase:
                scope.cancel()

    async def wait(self, phase: Phase) -> None:
        if self.phase >= phase:
            await anyio.lowlevel.checkpoint()
            return
        event = self._events.get(phase)
        if event is None:
            event = self._events[phase] = anyio.Event()
        await event.wait()

    def watch(self, scope: anyio.CancelScope, phase: Phase) -> None:
        if self.phase >= phase:
            scope.cancel()
        self._watchers[scope] = phase

    def unwatch(self, scope: anyio.CancelScope) -> None:
        self._watchers.pop(scope, None)


class FlightNode:
    """Counts the work in flight under one token and everything below it, and
    the holds of servers that close themselves (``ShutdownToken.closes_itself``)."""

    __slots__ = (
        "__weakref__",
        "chain",
        "children",
        "count",
        "held",
        "holds",
        "idle_event",
        "prefix",
        "started",
    )

    def __init__(self, parent: FlightNode | None = None, prefix: str = "") -> None:
        self.prefix: str = prefix
        self.count: int = 0  # work in flight here and below
        self.held: int = 0  # holds here and below
        self.holds: dict[str, int] = {}
        # Each unit of work in flight here, and when it began (time.monotonic(),
        # for the dump). Its label is built only when read: the common path,
        # a request that ends before anyone looks, never formats one.
        self.started: dict[_InFlight, float] = {}
        # Weak: a child per connection must not be kept once dropped. Work in
        # flight keeps its node alive (the in_flight guard holds it).
        self.children: weakref.WeakSet[FlightNode] = weakref.WeakSet()
        self.idle_event: anyio.Event | None = None
        # This node and its ancestors: every one of them counts our work.
        self.chain: tuple[FlightNode, ...] = (self,)
        if parent is not None:
            parent.children.add(self)
            self.chain += parent.chain

    def _nodes(self) -> Iterator[FlightNode]:
        pending = [self]
        while pending:
            node = pending.pop()
            yield node
            pending.extend(node.children)

    def snapshot(self) -> tuple[str, ...]:
        """Labels in flight here and below, one entry per unit of work, sorted."""
        found: list[str] = []
        for node in self._nodes():
            found.extend([node.prefix + unit.label for unit in list(node.started)])
        return tuple(sorted(found))

    def ages(self, now: float) -> list[tuple[str, float]]:
        """``(label, seconds in flight)`` for each unit here and below, oldest first."""
        found = [
            (node.prefix + unit.label, now - since)
            for node in self._nodes()
            for unit, since in list(node.started.items())
        ]
        return sorted(found, key=lambda item: -item[1])

    def hold_names(self) -> tuple[str, ...]:
        """What holds the drain open here and below (``closes_itself``), sorted."""
        found: list[str] = []
        for node in self._nodes():
            for what, n in node.holds.items():
                found.extend([node.prefix + what] * n)
        return tuple(sorted(found))

    def _left(self) -> None:
        for up in self.chain:
            if not (up.count or up.held) and up.idle_event is not None:
                up.idle_event.set()
                up.idle_event = None

    async def wait_idle(self) -> None:
        """Wait until nothing is in flight and nothing holds the drain."""
        if not (self.count or self.held):
            await anyio.lowlevel.checkpoint()
            return
        if self.idle_event is None:
            self.idle_event = anyio.Event()
        await self.idle_event.wait()


_MAX_DETAIL = 100  # characters of a request's path in its label


@final
class _InFlight:
    """One unit of work in flight; the guard ``ShutdownToken.in_flight`` returns.

    Entering and leaving it takes no lock and allocates nothing: this runs for
    every request. The label is ``what``, or ``"what detail"`` (the detail
    shortened to ``_MAX_DETAIL`` characters) formatted when first read.
    """

    __slots__ = ("_detail", "_label", "_node")

    def __init__(self, node: FlightNode, what: str, detail: str | None = None) -> None:
        self._node = node
        self._label = what
        self._detail = detail

    @property
    def label(self) -> str:
        """What this unit of work is, in reports."""
        detail = self._detail
        if detail is not None:
            if len(detail) > _MAX_DETAIL:
                detail = detail[: _MAX_DETAIL - 1] + "…"
            self._label = f"{self._label} {detail}"
            self._detail = None
        return self._label

    def __enter__(self) -> None:
        node = self._node
        started = node.started
        if self in started:
            msg = "this in_flight() guard is already entered: make one per unit of work"
            raise RuntimeError(msg)
        started[self] = _monotonic()
        for up in node.chain:
            up.count += 1

    def __exit__(self, *exc_info: object) -> None:
        node = self._node
        del node.started[self]
        for up in node.chain:
            up.count -= 1
            if up.idle_event is not None and not (up.count or up.held):
                up.idle_event.set()
                up.idle_event = None


def open_request(token: ShutdownToken, method: str, path: str) -> _InFlight:
    """``token.in_flight(f"{method} {path}")``, entered: one call, not three.

    The label is formatted only if read; the caller leaves with ``__exit__()``.
    """
    node = token._node  # noqa: SLF001 -- this module's own
    # Built without its __init__: one Python call fewer per request.
    unit = _new_unit(_InFlight)
    unit._node = node  # noqa: SLF001 -- this module's own
    unit._label = method  # noqa: SLF001
    unit._detail = path  # noqa: SLF001
    node.started[unit] = _monotonic()
    for up in node.chain:
        up.count += 1
    return unit


@final
class ShutdownToken:
    """What a service sees of the shutdown. Services receive one as first argument.

    A service's token shows *its own* phase: services stop in reverse start order,
    so a service started early stays ``RUNNING`` while later ones drain. The
    scope's own token (``scope.token``) shows the scope's phase.

    Tokens belong to the event loop thread; use ``ShutdownScope.request_shutdown``
    from other threads.
    """

    __slots__ = ("_cell", "_name", "_node", "_view")

    def __init__(
        self, *, name: str, cell: PhaseCell, node: FlightNode, view: ScopeView
    ) -> None:
        self._name = name
        self._cell = cell
        self._node = node
        self._view = view

    def __repr__(self) -> str:
        return (
            f"<ShutdownToken {self._name!r} phase={self._cell.phase.name}"
            f" in_flight={self._node.count}>"
        )

    @property
    def name(self) -> str:
        """The service (and child) name this token belongs to."""
        return self._name

    @property
    def phase(self) -> Phase:
        """This token's current phase."""
        return self._cell.phase

    @property
    def reason(self) -> str | None:
        """Why the scope is shutting down; None while nothing asked it to."""
        return self._view.reason

    @property
    def stop_requested(self) -> bool:
        """True once this token has reached STOPPING: time to wind down."""
        return self._cell.phase >= Phase.STOPPING

    @property
    def ready(self) -> bool:
        """Readiness for load balancers: False from the first trigger on."""
        return self._view.reason is None

    @property
    def deadline(self) -> float:
        """When work under this token gets cancelled, on anyio's clock.

        ``math.inf`` while running; the drain deadline once this token is asked
        to stop; the end of the cancel window in CANCELLING.
        """
        return self._view.deadline_for(self._cell.phase)

    @property
    def in_flight_count(self) -> int:
        """Units of work in flight under this token and its children."""
        return self._node.count

    def in_flight_labels(self) -> tuple[str, ...]:
        """Labels of the work in flight under this token and its children."""
        return self._node.snapshot()

    async def wait_phase(self, phase: Phase) -> None:
        """Wait until this token reaches ``phase`` (or a later one). A checkpoint."""
        await self._cell.wait(Phase(phase))

    def take(self, stream: Receiver[T], *, until: Phase = Phase.STOPPING) -> Take[T]:
        """The items of ``stream`` until this token reaches ``until``.

        Each step receives one item; it stops waiting, and the loop ends, once the
        phase is reached. An item received as the stop begins is still yielded,
        never dropped; items not yet received stay in the stream. Mark each
        item's handling in flight, so the drain waits for it::

            async for message in token.take(queue):
                with token.in_flight(f"message {message.id}"):
                    await handle(message)

        Raises:
            TypeError: ``stream`` has no ``receive()`` method.
            ValueError: ``until`` is not a phase after RUNNING.
        """
        from ._take import Take, check_take

        return Take(self, stream, check_take(stream, until))

    def in_flight(self, label: str) -> _InFlight:
        """Mark a unit of work (a request, a message) as in flight.

        The drain waits for it; if it is still running at the drain deadline it is
        cancelled and reported by ``label``. Cheap enough to wrap every request::

            with token.in_flight(f"GET {path}"):
                ...
        """
        return _InFlight(self._node, label)

    @contextmanager
    def closes_itself(self, what: str) -> Iterator[None]:
        """Hold the drain open while a service closes itself, e.g. a server.

        A service with nothing in flight is cancelled when its turn to drain
        comes. A server that stops accepting and waits for its connections on
        its own says so with this around its whole life: while inside, the
        drain waits for the service to return (up to the drain deadline)
        instead. It is not work in flight: reports do not list it. A service
        cut at the deadline inside it is reported ``cancelled``.
        """
        if not isinstance(what, str) or not what:
            msg = f"closes_itself() needs a non-empty description, not {what!r}"
            raise ValueError(msg)
        node = self._node
        node.holds[what] = node.holds.get(what, 0) + 1
        for up in node.chain:
            up.held += 1
        try:
            yield
        finally:
            left = node.holds[what] - 1
            if left:
                node.holds[what] = left
            else:
                del node.holds[what]
            for up in node.chain:
                up.held -= 1
            node._left()  # noqa: SLF001 -- the node's own bookkeeping

    @contextmanager
    def cancel_on(self, phase: Phase) -> Iterator[anyio.CancelScope]:
        """A cancel scope that is cancelled when this token reaches ``phase``.

        Entered after that phase was reached, it is cancelled at once (the next
        checkpoint inside it raises).
        """
        scope = anyio.CancelScope()
        self._cell.watch(scope, Phase(phase))
        try:
            with scope:
                yield scope
        finally:
            self._cell.unwatch(scope)

    def shield_cleanup(self) -> anyio.CancelScope:
        """A shielded cancel scope for cleanup that is still bounded.

        Its deadline is ``cancel_timeout`` from now, and never later than the end
        of the scope's whole budget (after which the watchdog ends the process)::

            finally:
                with token.shield_cleanup():
                    await connection.aclose()
        """
        return anyio.CancelScope(shield=True, deadline=self._view.cleanup_bound())

    def child(self, name: str) -> ShutdownToken:
        """A token for a sub-group of this one's work.

        It shares this token's phase; its in-flight work counts for this token
        too and is labelled ``"name/label"`` in reports.
        """
        if not isinstance(name, str) or not name:
            msg = f"child() needs a non-empty name, not {name!r}"
            raise ValueError(msg)
        return ShutdownToken(
            name=f"{self._name}/{name}",
            cell=self._cell,
            node=FlightNode(self._node, prefix=f"{self._node.prefix}{name}/"),
            view=self._view,
        )
