"""In-process helpers: a scope safe inside a test run, driven to a phase."""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager
from typing import Any

from shutdown_scope import Phase, ShutdownScope, graceful_scope

__all__ = ["drive_to", "graceful_test_scope"]


def graceful_test_scope(
    *,
    signals: Iterable[int] = (),
    hard_exit: bool = False,
    systemd_notify: bool = False,
    **options: Any,
) -> AbstractAsyncContextManager[ShutdownScope]:
    """``graceful_scope()`` with defaults for a test inside the test process.

    No signal handlers (a SIGINT still stops the test run), no watchdog that
    could end the whole run with ``os._exit``, and no notifications to a
    systemd that runs the tests. Every other option (``drain_timeout``, ...)
    is ``graceful_scope``'s.
    """
    return graceful_scope(
        signals=signals, hard_exit=hard_exit, systemd_notify=systemd_notify, **options
    )


async def drive_to(
    scope: ShutdownScope, phase: Phase, *, reason: str = "drive_to"
) -> Phase:
    """Begin the shutdown (unless begun) and wait until ``scope`` reaches ``phase``.

    Returns the scope's phase when this returns: ``phase``, or a later one if
    the scope was past it already, or went on before this task ran again (it
    leaves DRAINING at once when nothing is in flight). ``Phase.RUNNING``
    returns at once. A checkpoint. The scope stays in DRAINING while work is
    in flight, up to its drain deadline; under virtual time
    (``virtual_clock_backend``) the deadlines pass as soon as every task waits.

    The body is stopped last, like a service: once the scope is CANCELLING,
    the body's next checkpoint is cancelled. The phases after CANCELLING need
    the body to end, so they cannot be waited for here.

    Raises:
        ValueError: ``phase`` is after CANCELLING.
        RuntimeError: the scope is not running (it has exited).
    """
    phase = Phase(phase)
    if phase > Phase.CANCELLING:
        msg = (
            f"drive_to() reaches phases up to CANCELLING, not {phase.name}:"
            " the scope is done once its block has exited (scope.report)"
        )
        raise ValueError(msg)
    if scope.phase == Phase.DONE:
        msg = "drive_to() needs a running scope; this one has exited"
        raise RuntimeError(msg)
    if phase > Phase.RUNNING:
        scope.request_shutdown(reason)
    await scope.token.wait_phase(phase)
    return scope.phase
