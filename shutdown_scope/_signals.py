"""Signals -> triggers: counting, debounce, escalation, and restoring handlers.

We install plain Python handlers (``signal.signal``) rather than anyio's
``open_signal_receiver``: a Python handler still runs while synchronous code
blocks the event loop, so the third Ctrl-C ends even a stuck process; and we put
back exactly the handler that was there before (anyio's asyncio backend leaves
SIG_DFL behind).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

from typing_extensions import Self

__all__ = ["SignalHandlers"]

_Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


class SignalHandlers:
    """Installed for the life of one scope; counts signals with a debounce.

    ``on_signal(signum, count)`` runs inside the handler, on the main thread, at
    whatever point the interpreter was: it must only do signal-safe things.
    """

    def __init__(
        self,
        signals: tuple[signal.Signals, ...],
        *,
        debounce: float,
        on_signal: Callable[[signal.Signals, int], None],
    ) -> None:
        self._signals = signals
        self._debounce = debounce
        self._on_signal = on_signal
        self._previous: dict[signal.Signals, _Handler] = {}
        self._last: float | None = None
        self.count = 0

    def __call__(self, signum: int, frame: FrameType | None) -> None:  # noqa: ARG002
        now = time.monotonic()
        if self._last is not None and now - self._last < self._debounce:
            return  # one supervisor signalling parent and child: count once
        self._last = now
        self.count += 1
        self._on_signal(signal.Signals(signum), self.count)

    def __enter__(self) -> Self:
        if threading.current_thread() is not threading.main_thread():
            msg = (
                "graceful_scope() installs signal handlers, which Python allows only"
                " in the main thread; enter it in the main thread, or pass signals=()"
                " and call scope.request_shutdown() yourself"
            )
            raise RuntimeError(msg)
        for sig in self._signals:
            if isinstance(signal.getsignal(sig), SignalHandlers):
                msg = (
                    f"an enclosing graceful_scope already handles {sig.name}; a nested"
                    " scope would steal it. Pass signals=() to the inner scope (it then"
                    " stops on request or when its body ends), or run the inner work"
                    " as a service with token.child()"
                )
                raise RuntimeError(msg)  # noqa: TRY004 -- misuse, not a bad type
        try:
            for sig in self._signals:
                self._previous[sig] = signal.signal(sig, self)
        except BaseException:
            self._restore()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._restore()

    def _restore(self) -> None:
        while self._previous:
            sig, previous = self._previous.popitem()
            # None means "installed from C, not by Python"; SIG_DFL is our best
            # equivalent (signal.signal refuses None).
            signal.signal(sig, signal.SIG_DFL if previous is None else previous)
