"""ShutdownToken: what a service sees of the shutdown."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol, TypeVar, final

import anyio

from ._flight import FlightNode, InFlight
from ._phases import Phase

if TYPE_CHECKING:
    from ._take import Receiver, Take

T = TypeVar("T")

__all__ = ["FlightNode", "PhaseCell", "ScopeView", "ShutdownToken"]


class ScopeView(Protocol):
    """What a token reads of its scope's shutdown state (``_state.ShutdownState``)."""

    @property
    def reason(self) -> str | None: ...

    def deadline_for(self, phase: Phase) -> float:
        """When work in ``phase`` is cancelled, on anyio's clock."""

    def cleanup_bound(self) -> float:
        """The deadline of a cleanup that starts now."""

    def on_trigger(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` the moment ``reason`` is set; returns the undo."""


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

    def in_flight(self, label: str) -> InFlight:
        """Mark a unit of work (a request, a message) as in flight.

        The drain waits for it; if it is still running at the drain deadline it is
        cancelled and reported by ``label``. Cheap enough to wrap every request::

            with token.in_flight(f"GET {path}"):
                ...
        """
        return InFlight(self._node, label)

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
        node.hold(what)
        try:
            yield
        finally:
            node.release(what)

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
