"""Small services and options shared by the in-process tests."""

from __future__ import annotations

from typing import Any

import anyio
from anyio.abc import TaskStatus

from shutdown_scope import ShutdownToken

# In the pytest process: no signal handlers, and never a watchdog that could
# end the test run.
NO_SIGNALS: dict[str, Any] = {"signals": (), "hard_exit": False}


async def idle(
    token: ShutdownToken, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    """A service that does nothing until it is cancelled."""
    task_status.started()
    await anyio.sleep_forever()
