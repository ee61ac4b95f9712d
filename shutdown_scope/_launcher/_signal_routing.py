"""What a signal sent to the launcher becomes: a reload, a forwarded signal, nothing.

``--debounce``: the same signal again within that many seconds counts once (a
terminal's Ctrl-C and a process manager's SIGINT at once). ``--rewrite``: a
signal forwarded as another, or dropped (0); SIGHUP means a reload unless
rewritten.
"""

from __future__ import annotations

import logging
import math
import signal

TYPE_CHECKING = False  # typing costs milliseconds before the first child starts
if TYPE_CHECKING:
    from typing import Literal

__all__ = ["STOPPING", "SignalRouting", "signal_name"]

logger = logging.getLogger("shutdown_scope.launcher")

# Incoming signals that mean "stop": no reload after one, and the grace period runs.
STOPPING = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGQUIT})


def signal_name(signum: int) -> str:
    """``SIGTERM``, ``SIGRTMIN+3`` (real-time signals have no names of their own)."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        if hasattr(signal, "SIGRTMIN") and signal.SIGRTMIN < signum < signal.SIGRTMAX:
            return f"SIGRTMIN+{signum - signal.SIGRTMIN}"
        return f"signal {signum}"


class SignalRouting:
    """Debounce and ``--rewrite``, with when each signal last arrived."""

    def __init__(self, rewrite: dict[int, int], debounce: float) -> None:
        self._rewrite = rewrite
        self._debounce = debounce
        self._last: dict[int, float] = {}

    def route(self, sig: int, now: float) -> int | Literal["reload"] | None:
        """The signal to forward for ``sig``, ``"reload"``, or None to ignore it."""
        last = self._last.get(sig, -math.inf)
        if now - last < self._debounce:
            name = signal_name(sig)
            logger.info(
                "%s again within %.2f s: counted once",
                name,
                self._debounce,
                extra={"event": "signal_debounced", "signal": name},
            )
            return None
        self._last[sig] = now
        if sig == signal.SIGHUP and sig not in self._rewrite:
            return "reload"
        sent = self._rewrite.get(sig, sig)
        if sent == 0:
            name = signal_name(sig)
            extra = {"event": "signal_dropped", "signal": name}
            logger.info("%s dropped (--rewrite)", name, extra=extra)
            return None
        return sent
