"""ShutdownState: the one writer of a scope's shutdown state.

Trigger, reason, signal, the scope's phase and every service's phase, the
deadlines and the service records are assigned here and nowhere else. Tokens,
the report, the systemd notifier, the dump and the watchdog's description read
it, or subscribe to its phase events. The deadlines are not stored: they follow
from the plan, the trigger time and the time CANCELLING began.

Every method runs on the event loop thread. Calls from signal handlers and other
threads come in through ``post`` (one hop: a loop callback puts them in the
inbox that ``serve_inbox`` runs).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import signal
from collections import deque
from collections.abc import Callable
from typing import Any

import anyio

from ._backend import LoopHandle
from ._errors import ServiceNotStartedError
from ._phases import Phase, Plan
from ._report import PhaseRecord, ShutdownReport, TriggerKind
from ._service import Service
from ._token import FlightNode

__all__ = ["PhaseListener", "ShutdownState"]

logger = logging.getLogger("shutdown_scope")

PhaseListener = Callable[[Phase, tuple[str, ...]], None]
"""Told of each phase the scope enters, with what was in flight; must not raise."""


def _nothing() -> None:
    pass


def _discard(callbacks: list[Callable[[], None]], callback: Callable[[], None]) -> None:
    with contextlib.suppress(ValueError):  # called already
        callbacks.remove(callback)


class ShutdownState:
    """The shutdown state of one scope, and its only writer."""

    def __init__(self, *, plan: Plan, handle: LoopHandle) -> None:
        self.plan = plan
        self._handle = handle
        self.trigger: TriggerKind | None = None
        self.signal: signal.Signals | None = None
        self._reason: str | None = None
        self.t0: float = math.inf  # anyio clock: the trigger
        self._cancelling_at = math.inf  # anyio clock: CANCELLING began
        self._guarded = False  # a trigger with a budget (not "finished")
        self._no_final = False  # a service outlived the budget: wait for each
        self.body: Service = Service("body", node=FlightNode(), view=self, started=True)
        self.services: list[Service] = []
        self.errors: list[Exception] = []
        self.triggered: anyio.Event = anyio.Event()
        self.escalated: anyio.Event = anyio.Event()
        self._log: list[tuple[Phase, float, tuple[str, ...]]] = []
        self._listeners: list[PhaseListener] = []
        self._on_trigger: list[Callable[[], None]] = []
        self._inbox: deque[tuple[Callable[..., None], tuple[Any, ...]]] = deque()
        self._inbox_ready = anyio.Event()

    # -- reading ------------------------------------------------------------------

    @property
    def reason(self) -> str | None:
        """Why the scope is shutting down; None while nothing asked it to."""
        return self._reason

    @property
    def phase(self) -> Phase:
        """The scope's phase."""
        return self.body.cell.phase

    @property
    def announce_end(self) -> float:
        return self.t0 + self.plan.announce_delay if self._guarded else math.inf

    @property
    def drain_deadline(self) -> float:
        return self.announce_end + self.plan.drain_timeout

    @property
    def cancel_deadline(self) -> float:
        """The end of the cancel window: from the moment CANCELLING began."""
        return self._cancelling_at + self.plan.cancel_timeout

    @property
    def final_deadline(self) -> float:
        """When everything is cut off (the watchdog's moment, on anyio's clock)."""
        return min(self.drain_deadline + self.plan.cancel_timeout, self.cancel_deadline)

    @property
    def wait_deadline(self) -> float:
        """How long the machine waits for a cancelled service: the final
        deadline, or for ever once a service outlived it (``hard_exit=False``)."""
        return math.inf if self._no_final else self.final_deadline

    def deadline_for(self, phase: Phase) -> float:
        """When work in ``phase`` gets cancelled (a token's ``deadline``)."""
        if phase == Phase.RUNNING:
            return math.inf
        if phase >= Phase.CANCELLING and math.isfinite(self._cancelling_at):
            return self.cancel_deadline
        return self.drain_deadline

    def cleanup_bound(self) -> float:
        """A cleanup starting now: ``cancel_timeout``, within the final deadline."""
        now = anyio.current_time()
        return min(now + self.plan.cancel_timeout, self.final_deadline)

    def in_flight(self) -> tuple[str, ...]:
        return self.body.node.snapshot()

    def subscribe(self, listener: PhaseListener) -> None:
        """Call ``listener(phase, in_flight)`` at each phase the scope enters."""
        self._listeners.append(listener)

    def on_trigger(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` when the shutdown begins, the moment ``reason``
        is set (at once if it has begun); returns what unsubscribes it."""
        if self._reason is not None:
            callback()
            return _nothing
        self._on_trigger.append(callback)
        return functools.partial(_discard, self._on_trigger, callback)

    def describe(self) -> str:
        """Phase, reason, work in flight, unfinished services (any thread, best
        effort: the watchdog's dump reads it while the loop may be stuck)."""
        waiting = [s.name for s in [*self.services, self.body] if not s.done.is_set()]
        return (
            f"  phase: {self.phase.name}; reason: {self._reason}\n"
            f"  in flight: {list(self.in_flight())}\n"
            f"  not finished: {waiting}\n"
        )

    # -- calls from other threads and signal handlers ---------------------------------

    def post(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` on the loop soon; safe from any thread and from a
        signal handler."""
        self._handle.run_sync_soon(self._enqueue, fn, args)

    def _enqueue(self, fn: Callable[..., None], args: tuple[Any, ...]) -> None:
        # A loop callback, outside any task, where anyio's API does not work
        # on asyncio: the inbox task makes the call.
        self._inbox.append((fn, args))
        self._inbox_ready.set()

    async def serve_inbox(self) -> None:
        while True:
            await self._inbox_ready.wait()
            self._inbox_ready = anyio.Event()
            while self._inbox:
                fn, args = self._inbox.popleft()
                fn(*args)

    # -- the trigger ----------------------------------------------------------------

    def begin(
        self, kind: TriggerKind, reason: str, sig: signal.Signals | None = None
    ) -> bool:
        """Start the shutdown; False (and nothing changes) if it has begun."""
        if self.trigger is not None:
            return False
        self.trigger, self.signal, self._reason = kind, sig, reason
        self.t0 = anyio.current_time()
        self.triggered.set()
        callbacks, self._on_trigger = self._on_trigger, []
        for callback in callbacks:
            try:
                callback()
            except Exception:  # noqa: PERF203 -- once per shutdown; a hook must not stop it
                logger.exception(
                    "shutdown_scope: a shutdown-begins hook failed: %r",
                    callback,
                    extra={"event": "trigger_hook_failed"},
                )
        if kind == "finished":
            return True  # nothing left to stop, nothing to guard
        self._guarded = True
        logger.info(
            "shutdown_scope: shutdown begins (%s: %s)",
            kind,
            reason,
            extra={
                "event": "shutdown_begins",
                "trigger": kind,
                "reason": reason,
                "signal": sig.name if sig is not None else None,
            },
        )
        self.enter(Phase.STOPPING)
        return True

    def escalate(self) -> None:
        """Skip to CANCELLING (a repeated signal)."""
        if self.phase >= Phase.CANCELLING:
            return
        self.enter_cancelling()
        self.escalated.set()
        for svc in [*self.services, self.body]:
            if svc.stop_requested_at is not None and not svc.done.is_set():
                svc.cell.advance(Phase.CANCELLING)  # the one being stopped

    def cancelled_from_outside(self) -> None:
        if self.trigger is None:
            self.trigger = "cancelled"

    # -- phases -----------------------------------------------------------------

    def enter(self, phase: Phase) -> None:
        """The scope enters ``phase`` (never backwards)."""
        cell = self.body.cell
        if phase <= cell.phase:
            return
        in_flight = self.in_flight()
        self._log.append((phase, anyio.current_time(), in_flight))
        cell.advance(phase)
        if phase != Phase.DONE:
            logger.info(
                "shutdown_scope: %s; in flight: %s",
                phase.name,
                list(in_flight) or "nothing",
                extra={
                    "event": "phase",
                    "phase": phase.name,
                    "in_flight": list(in_flight),
                },
            )
        for listener in self._listeners:
            listener(phase, in_flight)

    def enter_cancelling(self) -> None:
        self._cancelling_at = min(self._cancelling_at, anyio.current_time())
        self.enter(Phase.CANCELLING)

    def service_phase(self, svc: Service, phase: Phase) -> None:
        if phase == Phase.STOPPING and svc.stop_requested_at is None:
            svc.stop_requested_at = anyio.current_time()
        svc.cell.advance(phase)

    # -- service records --------------------------------------------------------

    def add_service(self, name: str, *, started: bool) -> Service:
        svc = Service(
            name,
            node=FlightNode(self.body.node, prefix=f"{name}: "),
            view=self,
            started=started,
        )
        self.services.append(svc)
        return svc

    def mark_started(self, svc: Service) -> None:
        svc.started = True
        svc.started_event.set()

    def cancel(self, svc: Service) -> None:
        """Cancel ``svc``, noting the work (and the self-closing) it loses."""
        svc.cancelled_in_flight = svc.node.snapshot()
        if svc.node.held:
            svc.outcome = "cancelled"  # cut while closing itself
        svc.cancel_scope.cancel()

    def abandon(self, svc: Service) -> None:
        """``svc`` ignored cancellation past the whole budget."""
        svc.outcome = "abandoned"
        self._no_final = True
        self.enter(Phase.EXITING)

    def service_raised(self, svc: Service, exc: Exception) -> bool:
        """Record the error; True if it is the scope's (a trigger), False if
        ``scope.start()`` re-raises it to its caller (not started yet)."""
        svc.error = exc
        if not svc.started:
            svc.outcome = "not started"
            return False
        svc.outcome = "failed"
        self.errors.append(exc)
        return True

    def service_interrupted(self, svc: Service) -> None:
        """Cancelled from outside the scope, or KeyboardInterrupt and the like."""
        svc.outcome, svc.cancelled_in_flight = "cancelled", svc.node.snapshot()
        self.cancelled_from_outside()

    def body_raised(self, exc: Exception) -> bool:
        """Record the body's error; True if it is one (a trigger)."""
        if isinstance(exc, ServiceNotStartedError) and exc.by_shutdown:
            return False  # the shutdown interrupted a start: part of a normal stop
        self.body.outcome, self.body.error = "failed", exc
        self.errors.append(exc)
        return True

    def finish(self, svc: Service) -> None:
        """``svc``'s task is over: settle its outcome."""
        if svc.outcome == "returned":
            if not svc.started:
                svc.outcome = "not started"
            elif svc.cancel_scope.cancel_called:
                svc.outcome = "cancelled" if svc.cancelled_in_flight else "stopped"
        if svc.cancelled_in_flight:
            logger.info(
                "shutdown_scope: service %r: cancelled in flight: %s",
                svc.name,
                list(svc.cancelled_in_flight),
                extra={
                    "event": "in_flight_cancelled",
                    "service": svc.name,
                    "in_flight": list(svc.cancelled_in_flight),
                },
            )
        svc.finished_at = anyio.current_time()
        svc.done.set()
        if self.body.done.is_set() and all(s.done.is_set() for s in self.services):
            self.begin("finished", "the body and every service returned")

    # -- the end ----------------------------------------------------------------

    def report(self, *, signals_received: int) -> ShutdownReport:
        """Close the state (DONE) and build the report."""
        self.enter(Phase.DONE)
        end = anyio.current_time()
        t0 = min(self.t0, end)
        body = self.body
        services = [s.record(t0) for s in self.services]
        if body.stop_requested_at is not None or body.outcome != "returned":
            services.append(body.record(t0))
        log = [(p, t, f) for p, t, f in self._log if p != Phase.DONE]
        starts = [t for _, t, _ in log[1:]] + [end] if log else []
        phases = tuple(
            PhaseRecord(phase=p, started=t - t0, duration=nxt - t, in_flight=f)
            for (p, t, f), nxt in zip(log, starts, strict=True)
        )
        return ShutdownReport(
            trigger=self.trigger or "cancelled",
            reason=self._reason or "cancelled from outside the scope",
            signal=None if self.signal is None else int(self.signal),
            signals_received=signals_received,
            phases=phases,
            services=tuple(services),
            errors=tuple(self.errors),
            duration=end - t0,
        )
