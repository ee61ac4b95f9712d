"""A child for tests/test_run.py: ``run(main, fast_exit=...)`` and what it keeps.

``python tests/_fast_exit_child.py BACKEND FAST(0|1) clean|lost MARKER_FILE``:
an atexit handler appends ``atexit`` to the marker file, a log record goes to a
logging handler on stdout, a print is left unflushed (stdout is a pipe: block
buffered), and an object alive until the interpreter's teardown appends
``teardown`` when it is collected.
"""

from __future__ import annotations

import atexit
import logging
import sys
from pathlib import Path

import anyio

from shutdown_scope import ShutdownToken, graceful_scope, run

backend, fast, outcome, marker = sys.argv[1:]


def mark(what: str) -> None:
    with Path(marker).open("a") as file:
        file.write(what + "\n")


class Teardown:
    """Collected only when the interpreter tears its modules down."""

    def __del__(self) -> None:
        mark("teardown")


KEPT = Teardown()
atexit.register(mark, "atexit")
log = logging.getLogger("child")
log.addHandler(logging.StreamHandler(sys.stdout))
log.setLevel(logging.INFO)


async def main() -> None:
    async def busy(token: ShutdownToken, *, task_status: object) -> None:
        with token.in_flight("job"):
            task_status.started()  # type: ignore[attr-defined]
            await anyio.sleep_forever()

    timeout = 0 if outcome == "lost" else 10
    options = {"signals": (), "hard_exit": False}
    async with graceful_scope(**options, drain_timeout=timeout) as scope:  # type: ignore[arg-type]
        if outcome == "lost":
            await scope.start(busy)
        scope.request_shutdown("test")
    log.info("logged: the scope is done")
    print("printed, not flushed")  # noqa: T201 -- stdout is what is tested


run(main, backend=backend, fast_exit=fast == "1")
