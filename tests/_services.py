"""Small services and options shared by the in-process tests."""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from anyio.abc import TaskStatus

from shutdown_scope import ShutdownToken

# In the pytest process: no signal handlers, and never a watchdog that could
# end the test run.
NO_SIGNALS: dict[str, Any] = {"signals": (), "hard_exit": False}
# For a test that raises SIGUSR1 itself: each signal counts (no debounce window),
# and still never a watchdog.
ON_SIGUSR1: dict[str, Any] = {
    "signals": (signal.SIGUSR1,),
    "signal_debounce": 0,
    "hard_exit": False,
}


async def idle(
    token: ShutdownToken, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    """A service that does nothing until it is cancelled."""
    task_status.started()
    await anyio.sleep_forever()


async def stubborn(token: ShutdownToken, *, task_status: TaskStatus[None]) -> None:
    """A service that ignores its cancellation: a shielded sleep of 50 s."""
    task_status.started()
    with anyio.CancelScope(shield=True):
        await anyio.sleep(50)


def late_cleanup(
    cleanup: list[tuple[float, float]], *, first_step: float
) -> Callable[..., Awaitable[None]]:
    """A service whose cleanup starts a ``token.shield_cleanup()`` late.

    It holds a request in flight until it is cancelled; then a first cleanup
    step takes ``first_step`` seconds (shielded), and a second one, under
    ``token.shield_cleanup()``, would take 100 s. It appends to ``cleanup``
    when (``anyio.current_time()``) that second step ended, and its deadline.
    """

    async def service(token: ShutdownToken, *, task_status: TaskStatus[None]) -> None:
        task_status.started()
        try:
            with token.in_flight("request"):
                await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.sleep(first_step)
            with token.shield_cleanup() as late:
                await anyio.sleep(100)
            cleanup.append((anyio.current_time(), late.deadline))

    return service
