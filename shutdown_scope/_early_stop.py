"""``shutdown-scope serve``: a stop signal before the scope exists is not lost.

The app module is imported, and the server configured, before the scope
installs its handlers; a SIGTERM meanwhile would end the process by the default
action (exit -15). ``EarlyStop`` catches the stop signals from the first line of
``serve`` on and only records them; once the scope exists, a recorded signal
becomes its shutdown (the server is then never started). Only ``signal`` here.
"""

from __future__ import annotations

import signal

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import FrameType

__all__ = ["STOP_SIGNALS", "EarlyStop"]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)  # what graceful_scope handles


class EarlyStop:
    """Records stop signals until the scope takes over the handlers."""

    def __init__(self) -> None:
        self.received: int | None = None
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._record)

    def _record(self, signum: int, frame: FrameType | None) -> None:  # noqa: ARG002
        if self.received is None:
            self.received = signum

    def reason(self) -> str | None:
        """``SIGTERM before the server started``, or None if no signal came."""
        if self.received is None:
            return None
        return f"{signal.Signals(self.received).name} before the server started"
