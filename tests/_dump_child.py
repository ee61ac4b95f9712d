"""A child for test_dump.py: a scope with ``dump_signal=SIGUSR1`` that serves.

``python _dump_child.py BACKEND``: a service holds ``job 7`` in flight and
prints ``tick N`` every 20 ms; a helper thread sleeps. Prints ``ready`` once
serving; on SIGTERM it drains and prints the report as JSON.
"""

from __future__ import annotations

# ruff: noqa: T201 -- a child process talks through stdout
import json
import signal
import sys
import threading
import time

import anyio
from anyio.abc import TaskStatus

from shutdown_scope import ShutdownToken, graceful_scope


async def ticking_service(
    token: ShutdownToken, *, task_status: TaskStatus[None]
) -> None:
    n = 0
    with token.in_flight("job 7"):
        task_status.started()
        while not token.stop_requested:
            n += 1
            print(f"tick {n}", flush=True)
            await anyio.sleep(0.02)


def helper() -> None:
    while True:
        time.sleep(1)


async def main() -> None:
    threading.Thread(target=helper, name="helper-thread", daemon=True).start()
    async with graceful_scope(
        dump_signal=signal.SIGUSR1, systemd_notify=False
    ) as scope:
        await scope.start(ticking_service)
        print("ready", flush=True)
    print(json.dumps(scope.report.as_dict()), flush=True)


anyio.run(main, backend=sys.argv[1])
