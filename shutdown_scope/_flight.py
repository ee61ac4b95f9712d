"""In-flight bookkeeping: the work and the holds under each token.

Each token has a ``FlightNode``; a child token's node hangs below its
parent's. Entering and leaving a unit of work touches its own node only (a
dict insert and a delete: this runs for every request); the totals of a node
and everything below it are summed when asked (the drain, the report, the
dump), and a wait for idleness watches the busy nodes below it.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterator
from typing import final

import anyio

__all__ = ["FlightNode", "InFlight", "open_flight"]

_monotonic = time.monotonic  # a global: no attribute lookup per request
_new_unit = object.__new__
_MAX_DETAIL = 100  # characters of a request's path in its label


class FlightNode:
    """The work in flight under one token, and the holds of servers that close
    themselves (``ShutdownToken.closes_itself``); the totals include the
    nodes below."""

    __slots__ = ("__weakref__", "children", "holds", "idle_event", "prefix", "started")

    def __init__(self, parent: FlightNode | None = None, prefix: str = "") -> None:
        self.prefix: str = prefix
        self.holds: dict[str, int] = {}  # this node's own
        # Each unit of work in flight on this node, and when it began
        # (time.monotonic(), for the dump). Its label is built only when read:
        # the common path, a request that ends before anyone looks, never
        # formats one.
        self.started: dict[InFlight, float] = {}
        # Weak: a child per connection must not be kept once dropped. Work in
        # flight keeps its node alive (the in_flight guard holds it). A set of
        # references, not a WeakSet: the sums copy it in one C call, so a
        # metrics thread summing while the loop adds a child does not fail
        # with "Set changed size during iteration".
        self.children: set[weakref.ref[FlightNode]] = set()
        # Set (and dropped) once this node's own work and holds are over;
        # made only while someone waits.
        self.idle_event: anyio.Event | None = None
        if parent is not None:
            parent.children.add(weakref.ref(self, parent.children.discard))

    def _nodes(self) -> Iterator[FlightNode]:
        pending = [self]
        while pending:
            node = pending.pop()
            yield node
            for child in node.children.copy():
                found = child()
                if found is not None:
                    pending.append(found)

    @property
    def count(self) -> int:
        """Units of work in flight here and below."""
        return sum(len(node.started) for node in self._nodes())

    @property
    def held(self) -> int:
        """Holds (``closes_itself``) here and below."""
        return sum(sum(node.holds.values()) for node in self._nodes())

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
            for what, n in list(node.holds.items()):
                found.extend([node.prefix + what] * n)
        return tuple(sorted(found))

    def hold(self, what: str) -> None:
        """One more hold named ``what`` on this node."""
        self.holds[what] = self.holds.get(what, 0) + 1

    def release(self, what: str) -> None:
        """One hold named ``what`` less; wakes the waiters once idle."""
        left = self.holds[what] - 1
        if left:
            self.holds[what] = left
        else:
            del self.holds[what]
            self._left()

    def _left(self) -> None:
        event = self.idle_event
        if event is not None and not (self.started or self.holds):
            self.idle_event = None
            event.set()

    async def wait_idle(self) -> None:
        """Wait until nothing is in flight and nothing holds the drain, here
        and below. A checkpoint."""
        busy = self._busy()
        if not busy:
            await anyio.lowlevel.checkpoint()
            return
        while busy:
            # Each in turn; once all were idle, look again: work may have
            # begun meanwhile, on them or on other nodes.
            for node in busy:
                if node.started or node.holds:
                    if node.idle_event is None:
                        node.idle_event = anyio.Event()
                    await node.idle_event.wait()
            busy = self._busy()

    def _busy(self) -> list[FlightNode]:
        return [node for node in self._nodes() if node.started or node.holds]


@final
class InFlight:
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
        started = self._node.started
        if self in started:
            msg = "this in_flight() guard is already entered: make one per unit of work"
            raise RuntimeError(msg)
        started[self] = _monotonic()

    def __exit__(self, *exc_info: object) -> None:
        node = self._node
        started = node.started
        del started[self]
        if node.idle_event is not None and not started:
            node._left()  # noqa: SLF001 -- the node's own bookkeeping


def open_flight(node: FlightNode, what: str, detail: str) -> InFlight:
    """``InFlight(node, what, detail)``, entered: one call, not three.

    The label is formatted only if read; the caller leaves with ``__exit__()``.
    """
    # Built without its __init__: one Python call fewer per request.
    unit = _new_unit(InFlight)
    unit._node = node  # noqa: SLF001 -- this module's own
    unit._label = what  # noqa: SLF001
    unit._detail = detail  # noqa: SLF001
    node.started[unit] = _monotonic()
    return unit
