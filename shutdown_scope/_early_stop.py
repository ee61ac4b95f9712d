"""``shutdown-scope serve``: a stop signal before the scope exists is not lost.

The app module is imported, and the server configured, before the scope
installs its handlers; a SIGTERM meanwhile would end the process by the default
action (exit -15). ``EarlyStop`` catches the stop signals from the first line of
``serve`` on and only records them; once the scope exists, a recorded signal
becomes its shutdown (the server is then never started). A second one (after
graceful_scope's debounce) exits at once, with 128 + the first one's number, as
graceful_scope's escalation does: an import that hangs (on a database, say)
must not make the process deaf to Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import os
import signal
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import FrameType

__all__ = ["STOP_SIGNALS", "EarlyStop"]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)  # what graceful_scope handles
# graceful_scope's default signal_debounce: a Ctrl-C the launcher also passes on
# arrives twice, and counts once.
_DEBOUNCE = 0.2


class EarlyStop:
    """Records stop signals until the scope takes over the handlers."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._received_at = 0.0
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._record)

    def _record(self, signum: int, frame: FrameType | None) -> None:  # noqa: ARG002
        now = time.monotonic()
        if self.received is None:
            self.received = signum
            self._received_at = now
        elif now - self._received_at >= _DEBOUNCE:
            os._exit(128 + self.received)

    def reason(self) -> str | None:
        """``SIGTERM before the server started``, or None if no signal came."""
        if self.received is None:
            return None
        return f"{signal.Signals(self.received).name} before the server started"
