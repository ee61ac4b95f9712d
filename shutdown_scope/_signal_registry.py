"""The process's signal registry, in the spirit of Go's ``os/signal``.

Any number of subscribers may ask for the same signal; each gets every one.
The registry's handler is installed with the first subscription to a signal,
and the handler that was there before comes back after the last one ends
(reference counts per signal). Subscribers are called inside the Python signal
handler, on the main thread, wherever the interpreter was: they must only do
signal-safe things (append to a deque, write to a pipe, schedule a callback).
Being a plain Python handler, it runs even while synchronous code blocks the
event loop, which the scope's escalation needs.

Module state on purpose: signal dispositions belong to the process.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any, Final, final

__all__ = ["Subscription", "is_registry_handler", "subscribe"]

_Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


@final
class _Dispatcher:
    """The one handler the registry installs, for every signal it serves."""

    def __call__(self, signum: int, frame: FrameType | None) -> None:  # noqa: ARG002
        # A tuple, replaced whole on change: safe to read at any bytecode.
        for subscription in _SUBSCRIBERS.get(signum, ()):
            if not subscription._closed:  # noqa: SLF001 -- this module's class
                subscription.deliver(signum)


_DISPATCH: Final = _Dispatcher()
_SUBSCRIBERS: Final[dict[int, tuple[Subscription, ...]]] = {}
_PREVIOUS: Final[dict[int, _Handler]] = {}


def is_registry_handler(handler: object) -> bool:
    """True if ``handler`` (from ``signal.getsignal``) is the registry's."""
    return handler is _DISPATCH


@final
class Subscription:
    """One subscriber's interest in some signals; ``close()`` ends it."""

    __slots__ = ("_closed", "_signals", "deliver", "scope_owner")

    def __init__(
        self,
        signals: tuple[signal.Signals, ...],
        deliver: Callable[[int], None],
        *,
        scope_owner: bool,
    ) -> None:
        self._signals = signals
        self.deliver = deliver
        self.scope_owner = scope_owner
        self._closed = False

    def close(self) -> None:
        """Unsubscribe; restore a signal's previous handler if this was its last
        subscriber. After it returns, ``deliver`` is not called again. Main
        thread only (handlers can only be set there). Idempotent."""
        if self._closed:
            return
        self._closed = True
        for sig in self._signals:
            _remove(sig, self)


def _check_main_thread(what: str, hint: str) -> None:
    if threading.current_thread() is not threading.main_thread():
        msg = (
            f"{what} installs signal handlers, which Python allows only in the main"
            f" thread; {hint}"
        )
        raise RuntimeError(msg)


def subscribe(
    signals: tuple[signal.Signals, ...],
    deliver: Callable[[int], None],
    *,
    what: str,
    hint: str = "call it from the main thread",
    scope_owner: bool = False,
) -> Subscription:
    """Have ``deliver(signum)`` called, inside the handler, for each of ``signals``.

    ``scope_owner``: a ``graceful_scope``'s own subscription; only one scope may
    own a signal at a time.

    Raises:
        RuntimeError: not on the main thread, or (``scope_owner``) a scope
            already owns one of the signals.
    """
    _check_main_thread(what, hint)
    if scope_owner:
        for sig in signals:
            if any(s.scope_owner for s in _SUBSCRIBERS.get(sig, ())):
                msg = (
                    f"an enclosing graceful_scope already handles {sig.name}; a"
                    " nested scope would take it over. Pass signals=() to the inner"
                    " scope (it then stops on request or when its body ends), or"
                    " run the inner work as a service with token.child()"
                )
                raise RuntimeError(msg)
    subscription = Subscription(signals, deliver, scope_owner=scope_owner)
    added: list[signal.Signals] = []
    try:
        for sig in signals:
            current = _SUBSCRIBERS.get(sig, ())
            if not current:
                _PREVIOUS[sig] = signal.signal(sig, _DISPATCH)
            _SUBSCRIBERS[sig] = (*current, subscription)
            added.append(sig)
    except BaseException:
        for sig in added:
            _remove(sig, subscription)
        raise
    return subscription


def _remove(sig: signal.Signals, subscription: Subscription) -> None:
    remaining = tuple(s for s in _SUBSCRIBERS.get(sig, ()) if s is not subscription)
    if remaining:
        _SUBSCRIBERS[sig] = remaining
        return
    previous = _PREVIOUS.pop(sig, signal.SIG_DFL)
    # Someone else's handler installed over ours since: theirs stays.
    if signal.getsignal(sig) is _DISPATCH:
        # None means "installed from C, not by Python"; SIG_DFL is the nearest
        # (signal.signal refuses None).
        signal.signal(sig, signal.SIG_DFL if previous is None else previous)
    _SUBSCRIBERS.pop(sig, None)
