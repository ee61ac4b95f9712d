"""Escalation: every trigger of a scope comes in here.

Signals are counted here, with the debounce; the first one (or a call, or an
error) begins the shutdown, the second skips to CANCELLING, the third exits
hard. This is the only code that arms or fires the watchdog. The state it
changes belongs to ``ShutdownState``: calls from signal handlers and other
threads reach it through ``ShutdownState.post``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import sys
import time

from ._phases import Phase
from ._report import TriggerKind
from ._state import ShutdownState
from ._watchdog import Watchdog

__all__ = ["Escalation"]

logger = logging.getLogger("shutdown_scope")

_THIRD = 3


class Escalation:
    """Turns triggers into phase changes for one scope; owns its watchdog."""

    def __init__(
        self,
        state: ShutdownState,
        *,
        watchdog: Watchdog | None,
        hard_exit: bool,
        hard_exit_code: int | None,
    ) -> None:
        self._state = state
        self._watchdog = watchdog
        self._hard_exit = hard_exit
        self._hard_exit_code = hard_exit_code
        self._debounce = state.plan.signal_debounce
        self._last_signal: float | None = None
        self.signals_received: int = 0
        state.subscribe(self._phase_entered)

    def _phase_entered(self, phase: Phase, in_flight: tuple[str, ...]) -> None:  # noqa: ARG002
        if phase == Phase.DONE and self._watchdog is not None:
            self._watchdog.stop()  # before anything else can take time

    def exit_code(self, sig: signal.Signals | None) -> int:
        """The hard exit's code for a shutdown begun by ``sig``."""
        if self._hard_exit_code is not None:
            return self._hard_exit_code
        return 1 if sig is None else 128 + sig

    def _arm(self, seconds: float, sig: signal.Signals | None) -> None:
        if self._hard_exit and self._watchdog is not None:
            self._watchdog.arm(seconds, self.exit_code(sig))

    # -- triggers -----------------------------------------------------------------

    def on_signal(self, signum: int) -> None:
        """Runs inside the signal handler: only signal-safe calls here."""
        now = time.monotonic()
        if self._last_signal is not None and now - self._last_signal < self._debounce:
            return  # one supervisor signalling parent and child: count once
        self._last_signal = now
        self.signals_received += 1
        count, sig, state = self.signals_received, signal.Signals(signum), self._state
        if state.phase == Phase.DONE:
            return  # the scope is over; its subscription is about to end
        if count == 1:
            # Armed here, not only from the loop, in case the loop is blocked.
            self._arm(state.plan.total, sig)
            state.post(self._first_signal, sig)
        elif count >= _THIRD or state.phase >= Phase.CANCELLING:
            assert self._watchdog is not None  # there is one whenever signals are
            code = self.exit_code(state.signal or sig)
            self._watchdog.fire_now(f"{sig.name} received {count} times", code)
        else:
            self._arm(state.plan.cancel_timeout, state.signal or sig)
            state.post(self._escalate, sig)

    def trigger(self, kind: TriggerKind, reason: str) -> None:
        """Begin the shutdown from the loop thread (a call, an error)."""
        if self._state.begin(kind, reason):
            self._arm(self._state.plan.total, None)

    def request_threadsafe(self, reason: str) -> None:
        """``trigger("request", reason)``, from any thread."""
        self._state.post(self.trigger, "request", reason)

    def give_up(self, why: str) -> bool:
        """A service outlived the budget: exit hard now if allowed (True)."""
        if not (self._hard_exit and self._watchdog is not None):
            return False
        self._watchdog.fire_now(why, self.exit_code(self._state.signal))
        return True

    # -- on the loop ----------------------------------------------------------------

    def _first_signal(self, sig: signal.Signals) -> None:
        state = self._state
        if not state.begin("signal", f"received {sig.name}", sig):
            return
        total = state.plan.total
        budget = "no time limit" if math.isinf(total) else f"up to {total:g} s"
        # One line even without logging configured: the first Ctrl-C is heard.
        line = (
            f"shutdown_scope: {sig.name}: stopping, {len(state.in_flight())} in"
            f" flight, {budget}; a second {sig.name} cancels\n"
        )
        err = sys.stderr
        if err is not None:
            with contextlib.suppress(Exception):  # a closed stderr stops nothing
                err.write(line)
                err.flush()

    def _escalate(self, sig: signal.Signals) -> None:
        if self._state.phase < Phase.CANCELLING:
            logger.warning(
                "shutdown_scope: %s again: cancelling what remains",
                sig.name,
                extra={"event": "escalated", "signal": sig.name},
            )
        self._state.escalate()
