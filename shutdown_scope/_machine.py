"""The phase machine: from a trigger to DONE, one service at a time.

It decides; ``ShutdownState`` writes. Its waits read the deadlines from the
state each time, and an escalation ends them through the state's ``escalated``
event: nothing here holds a deadline that would have to be patched.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Final

import anyio

from ._escalation import Escalation
from ._phases import Phase
from ._service import Service
from ._state import ShutdownState

__all__ = ["PhaseMachine", "first_of"]

logger = logging.getLogger("shutdown_scope")
# A task whose cleanup was cut at the deadline needs a few scheduler rounds to
# unwind; it has not ignored cancellation.
_UNWIND_ROUNDS: Final = 5


async def first_of(*waits: Callable[[], Awaitable[object]]) -> None:
    """Return once the first of ``waits`` has returned."""
    async with anyio.create_task_group() as tg:

        async def wait_then_stop(wait: Callable[[], Awaitable[object]]) -> None:
            await wait()
            tg.cancel_scope.cancel()

        for wait in waits:
            tg.start_soon(wait_then_stop, wait)


class PhaseMachine:
    """Stops a scope's services in reverse start order, then its body."""

    def __init__(self, state: ShutdownState, escalation: Escalation) -> None:
        self._state = state
        self._escalation = escalation

    async def run(self) -> None:
        """Wait for the trigger, then stop every service and the body."""
        state = self._state
        await state.triggered.wait()
        for svc in [*reversed(state.services), state.body]:
            await self._stop(svc)
        state.enter(Phase.DONE)

    async def _stop(self, svc: Service) -> None:
        """Stop one service: announce, drain, then cancel what remains."""
        state = self._state
        if svc.done.is_set():
            return
        escalated = state.escalated.wait
        if state.phase < Phase.CANCELLING:
            state.service_phase(svc, Phase.STOPPING)
            with anyio.move_on_at(state.announce_end):
                await first_of(svc.done.wait, escalated)
        if state.phase < Phase.CANCELLING and not svc.done.is_set():
            state.enter(Phase.DRAINING)
            state.service_phase(svc, Phase.DRAINING)
            with anyio.move_on_at(state.drain_deadline):
                await first_of(svc.done.wait, svc.node.wait_idle, escalated)
        if svc.done.is_set():
            return
        if (svc.node.count or svc.node.held) and state.phase < Phase.CANCELLING:
            state.enter_cancelling()  # the drain deadline cut work or a close
        if state.phase >= Phase.CANCELLING:
            state.service_phase(svc, Phase.CANCELLING)
        state.cancel(svc)
        with anyio.move_on_at(state.wait_deadline):
            await first_of(svc.done.wait, escalated)
        with anyio.move_on_at(state.wait_deadline):  # earlier if escalated
            await svc.done.wait()
        for _ in range(_UNWIND_ROUNDS):
            if svc.done.is_set():
                return
            await anyio.lowlevel.checkpoint()
        await self._abandon(svc)

    async def _abandon(self, svc: Service) -> None:
        """The service ignored cancellation past the whole budget."""
        self._state.abandon(svc)
        why = f"service {svc.name!r} ignored cancellation past the deadline"
        if self._escalation.give_up(why):
            await anyio.sleep_forever()  # the watchdog ends the process
        logger.error("shutdown_scope: %s; hard_exit=False, so waiting for it", why)
        await svc.done.wait()
