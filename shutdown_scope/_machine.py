"""The phase machine: from a trigger to DONE, one service at a time."""

from __future__ import annotations

import logging
import math
import signal
from collections.abc import Awaitable, Callable
from typing import Final

import anyio

from ._phases import Phase, Plan
from ._report import PhaseRecord, TriggerKind
from ._service import Service
from ._token import ScopeShared
from ._watchdog import Watchdog

__all__ = ["PhaseMachine"]

logger = logging.getLogger("shutdown_scope")
# A task whose cleanup was cut at the deadline needs a few scheduler rounds to
# unwind; it has not ignored cancellation.
_UNWIND_ROUNDS: Final = 5


async def _first_of(*waits: Callable[[], Awaitable[object]]) -> None:
    async with anyio.create_task_group() as tg:

        async def wait_then_stop(wait: Callable[[], Awaitable[object]]) -> None:
            await wait()
            tg.cancel_scope.cancel()

        for wait in waits:
            tg.start_soon(wait_then_stop, wait)


class PhaseMachine:
    """Moves a scope through its phases and stops its services in reverse order.

    Every method runs in a task on the event loop thread, except ``describe``
    (the watchdog's thread) and the reads in the scope's signal handler.
    """

    def __init__(
        self,
        *,
        plan: Plan,
        shared: ScopeShared,
        body: Service,
        services: list[Service],
        hard_exit: bool,
        hard_exit_code: int | None,
    ) -> None:
        self.plan = plan
        self.shared = shared
        self.body = body
        self.services = services  # the scope's list: it grows until the trigger
        self.hard_exit = hard_exit
        self.hard_exit_code = hard_exit_code
        self.watchdog: Watchdog | None = None
        self.trigger: TriggerKind | None = None
        self.signal: signal.Signals | None = None
        self.triggered = anyio.Event()
        self.t0 = math.inf
        self._announce_end = self._drain_deadline = math.inf
        self._cancel_deadline = math.inf
        self._window: anyio.CancelScope | None = None
        self._cancel_wait: anyio.CancelScope | None = None
        self._current: Service | None = None
        self._past_deadline = False
        self._log: list[tuple[Phase, float, tuple[str, ...]]] = []
        # Told of each phase entered, with what was in flight (the systemd
        # notifier); must not raise.
        self.on_enter: Callable[[Phase, tuple[str, ...]], None] | None = None

    @property
    def phase(self) -> Phase:
        return self.body.cell.phase

    def exit_code(self, sig: signal.Signals | None) -> int:
        """The watchdog's exit code for a shutdown begun by ``sig``."""
        if self.hard_exit_code is not None:
            return self.hard_exit_code
        return 1 if sig is None else 128 + sig

    def arm_watchdog(self, seconds: float, sig: signal.Signals | None) -> None:
        """Signal-handler safe."""
        if self.hard_exit and self.watchdog is not None:
            self.watchdog.arm(seconds, self.exit_code(sig))

    def stop_watchdog(self) -> None:
        if self.watchdog is not None:
            self.watchdog.stop()

    # -- triggers ---------------------------------------------------------------

    def begin(
        self, kind: TriggerKind, reason: str, sig: signal.Signals | None = None
    ) -> None:
        """Start the shutdown; later triggers are ignored."""
        if self.trigger is not None:
            return
        self.trigger, self.signal = kind, sig
        self.shared.reason = reason
        self.t0 = t0 = anyio.current_time()
        self.triggered.set()
        if kind == "finished":
            return  # nothing left to stop, nothing to guard
        logger.info("shutdown_scope: shutdown begins (%s: %s)", kind, reason)
        self.arm_watchdog(self.plan.total, sig)
        # Fixed here, not when run() next wakes: an escalation may come first.
        self._announce_end = t0 + self.plan.announce_delay
        self._drain_deadline = self._announce_end + self.plan.drain_timeout
        self.shared.final_deadline = self._drain_deadline + self.plan.cancel_timeout
        self._enter(Phase.STOPPING)

    def escalate(self, sig: signal.Signals) -> None:
        """A repeated signal: skip to CANCELLING."""
        if self.phase >= Phase.CANCELLING:
            return
        logger.warning("shutdown_scope: %s again: cancelling what remains", sig.name)
        self._enter_cancelling()
        if self._window is not None:
            self._window.cancel()
        svc = self._current
        if svc is not None and not svc.done.is_set():
            svc.cell.deadline = self._cancel_deadline
            svc.cell.advance(Phase.CANCELLING)
        if self._cancel_wait is not None:
            self._cancel_wait.deadline = self.shared.final_deadline

    # -- phases -----------------------------------------------------------------

    def _enter(self, phase: Phase) -> None:
        cell = self.body.cell
        if phase <= cell.phase:
            return
        in_flight = self.body.node.snapshot()
        self._log.append((phase, anyio.current_time(), in_flight))
        cell.deadline = {
            Phase.STOPPING: self._drain_deadline,
            Phase.DRAINING: self._drain_deadline,
            Phase.CANCELLING: self._cancel_deadline,
        }.get(phase, cell.deadline)
        cell.advance(phase)
        if phase != Phase.DONE:
            logger.info(
                "shutdown_scope: %s; in flight: %s",
                phase.name,
                list(in_flight) or "nothing",
            )
        if self.on_enter is not None:
            self.on_enter(phase, in_flight)

    def _enter_cancelling(self) -> None:
        self._cancel_deadline = anyio.current_time() + self.plan.cancel_timeout
        self.shared.final_deadline = min(
            self.shared.final_deadline, self._cancel_deadline
        )
        self.arm_watchdog(self.plan.cancel_timeout, self.signal)
        self._enter(Phase.CANCELLING)

    def _drain_window(self, deadline: float) -> anyio.CancelScope:
        self._window = anyio.CancelScope(deadline=deadline)
        return self._window

    async def run(self) -> None:
        """Wait for the trigger, then stop every service and the body."""
        await self.triggered.wait()
        for svc in [*reversed(self.services), self.body]:
            self._current = svc
            await self._stop(svc)
        self._current = None
        self._enter(Phase.DONE)
        self.stop_watchdog()  # before anything else can take time

    async def _stop(self, svc: Service) -> None:
        """Stop one service: announce, drain, then cancel what remains."""
        if svc.done.is_set():
            return
        svc.stop_requested_at = anyio.current_time()
        if self.phase < Phase.CANCELLING:
            svc.cell.deadline = self._drain_deadline
            svc.cell.advance(Phase.STOPPING)
            with self._drain_window(self._announce_end):
                await svc.done.wait()
        if self.phase < Phase.CANCELLING and not svc.done.is_set():
            self._enter(Phase.DRAINING)
            svc.cell.advance(Phase.DRAINING)
            with self._drain_window(self._drain_deadline):
                await _first_of(svc.done.wait, svc.node.wait_idle)
        if svc.done.is_set():
            return
        lost = svc.node.snapshot()
        if lost and self.phase < Phase.CANCELLING:
            self._enter_cancelling()
        if self.phase >= Phase.CANCELLING:
            svc.cell.deadline = self._cancel_deadline
            svc.cell.advance(Phase.CANCELLING)
        svc.cancelled_in_flight = lost
        svc.cancel_scope.cancel()
        end = self.shared.final_deadline if not self._past_deadline else math.inf
        with anyio.move_on_at(end) as self._cancel_wait:
            await svc.done.wait()
        self._cancel_wait = None
        for _ in range(_UNWIND_ROUNDS):
            if svc.done.is_set():
                return
            await anyio.lowlevel.checkpoint()
        await self._abandon(svc)

    async def _abandon(self, svc: Service) -> None:
        """The service ignored cancellation past the whole budget."""
        svc.outcome = "abandoned"
        self._past_deadline = True
        self._enter(Phase.EXITING)
        why = f"service {svc.name!r} ignored cancellation past the deadline"
        if self.hard_exit and self.watchdog is not None:
            self.watchdog.fire_now(why, self.exit_code(self.signal))
            await anyio.sleep_forever()  # the watchdog ends the process
        logger.error("shutdown_scope: %s; hard_exit=False, so waiting for it", why)
        await svc.done.wait()

    # -- reading it -----------------------------------------------------------

    def phase_records(self, end: float) -> tuple[PhaseRecord, ...]:
        """Each phase entered, timed from the trigger up to ``end``."""
        t0 = min(self.t0, end)
        log = [(p, t, f) for p, t, f in self._log if p != Phase.DONE]
        starts = [t for _, t, _ in log[1:]] + [end] if log else []
        return tuple(
            PhaseRecord(phase=p, started=t - t0, duration=nxt - t, in_flight=f)
            for (p, t, f), nxt in zip(log, starts, strict=True)
        )

    def describe(self) -> str:
        """For the watchdog's dump (runs on the watchdog thread, best effort)."""
        waiting = [s.name for s in [*self.services, self.body] if not s.done.is_set()]
        return (
            f"  phase: {self.phase.name}; reason: {self.shared.reason}\n"
            f"  in flight: {list(self.body.node.snapshot())}\n"
            f"  not finished: {waiting}\n"
        )
