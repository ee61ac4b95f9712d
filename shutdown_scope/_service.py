"""One service's record inside a scope: written only by ``ShutdownState``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

import anyio
from anyio.abc import TaskStatus

from ._report import ServiceOutcome, ServiceRecord
from ._token import FlightNode, PhaseCell, ScopeView, ShutdownToken

__all__ = ["Service", "StartedRelay"]

T = TypeVar("T")


class Service:
    """A service (or the scope's body): its token, cancel scope and fate.

    An ordinary record: ``ShutdownState`` is the only code that assigns to it.
    """

    __slots__ = (
        "cancel_scope",
        "cancelled_in_flight",
        "cell",
        "done",
        "error",
        "finished_at",
        "name",
        "node",
        "outcome",
        "started",
        "started_event",
        "stop_requested_at",
        "token",
    )

    def __init__(
        self, name: str, *, node: FlightNode, view: ScopeView, started: bool
    ) -> None:
        self.name: str = name
        self.cell: PhaseCell = PhaseCell()
        self.node: FlightNode = node
        self.token: ShutdownToken = ShutdownToken(
            name=name, cell=self.cell, node=node, view=view
        )
        self.cancel_scope: anyio.CancelScope = anyio.CancelScope()
        self.done: anyio.Event = anyio.Event()
        self.started: bool = started
        self.started_event: anyio.Event = anyio.Event()
        self.outcome: ServiceOutcome = "returned"
        self.error: BaseException | None = None
        self.stop_requested_at: float | None = None
        self.finished_at: float | None = None
        self.cancelled_in_flight: tuple[str, ...] = ()

    def record(self, t0: float) -> ServiceRecord:
        """The report's record, times counted from ``t0``."""

        def since(t: float | None) -> float | None:
            return None if t is None or t < t0 else t - t0

        return ServiceRecord(
            name=self.name,
            outcome=self.outcome,
            stop_requested_at=since(self.stop_requested_at),
            finished_at=since(self.finished_at),
            cancelled_in_flight=self.cancelled_in_flight,
            error=None if self.error is None else repr(self.error),
        )


class StartedRelay(TaskStatus[T], Generic[T]):
    """Passes ``started()`` on to anyio once the state has recorded it."""

    def __init__(
        self,
        service: Service,
        inner: TaskStatus[T],
        mark_started: Callable[[Service], None],
    ) -> None:
        self._service = service
        self._inner = inner
        self._mark_started = mark_started

    def started(self, value: T | None = None) -> None:
        if self._service.started:
            msg = f"service {self._service.name!r} called task_status.started() twice"
            raise RuntimeError(msg)
        self._mark_started(self._service)
        self._inner.started(value)  # type: ignore[arg-type]  # None only for TaskStatus[None]
