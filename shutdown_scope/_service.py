"""One service's bookkeeping inside a scope."""

from __future__ import annotations

from typing import Generic, TypeVar

import anyio
from anyio.abc import TaskStatus

from ._report import ServiceOutcome, ServiceRecord
from ._token import FlightNode, PhaseCell, ScopeShared, ShutdownToken

__all__ = ["Service", "StartedRelay"]

T = TypeVar("T")


class Service:
    """A service (or the scope's body): its token, cancel scope and fate."""

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
        "stop_requested_at",
        "token",
    )

    def __init__(
        self, name: str, *, cell: PhaseCell, node: FlightNode, shared: ScopeShared
    ) -> None:
        self.name = name
        self.cell = cell
        self.node = node
        self.token = ShutdownToken(name=name, cell=cell, node=node, shared=shared)
        self.cancel_scope = anyio.CancelScope()
        self.done = anyio.Event()
        self.started = False
        self.outcome: ServiceOutcome = "returned"
        self.error: BaseException | None = None
        self.stop_requested_at: float | None = None
        self.finished_at: float | None = None
        self.cancelled_in_flight: tuple[str, ...] = ()

    def finish(self, now: float) -> None:
        """Settle the outcome once the task is over (unless it failed)."""
        if self.outcome == "returned" and self.cancel_scope.cancel_called:
            self.outcome = "cancelled" if self.cancelled_in_flight else "stopped"
        self.finished_at = now
        self.done.set()

    def record(self, t0: float) -> ServiceRecord:
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
    """Passes ``started()`` on to anyio and remembers that it happened."""

    def __init__(self, service: Service, inner: TaskStatus[T]) -> None:
        self._service = service
        self._inner = inner

    def started(self, value: T | None = None) -> None:
        if self._service.started:
            msg = f"service {self._service.name!r} called task_status.started() twice"
            raise RuntimeError(msg)
        self._service.started = True
        self._inner.started(value)  # type: ignore[arg-type]  # None only for TaskStatus[None]
