"""The last resort: a thread that ends the process when the budget is spent.

It does not depend on the event loop, so it works while synchronous code blocks
the loop. Everything the loop side and signal handlers call here only assigns
attributes and writes one byte to a pipe: no locks, so it is safe inside a
signal handler that interrupted this very code.
"""

from __future__ import annotations

import contextlib
import faulthandler
import math
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable

__all__ = ["Watchdog"]


def _safely(describe: Callable[[], str]) -> str:
    try:
        return describe()
    except Exception as exc:  # noqa: BLE001 -- a dump must never stop the exit
        return f"  (could not describe: {exc!r})\n"


class Watchdog:
    """Ends the process with ``os._exit`` at a deadline, or at once on demand,
    after dumping every thread's stack and the async task tree to stderr."""

    def __init__(
        self,
        *,
        describe: Callable[[], str],
        dump_tasks: Callable[[], str],
        block_signals: Iterable[int] = (),
    ) -> None:
        self._describe = describe
        self._dump_tasks = dump_tasks
        self._block = frozenset(block_signals)
        self._deadline = math.inf  # time.monotonic()
        self._exit_code = 1
        self._fire_now: str | None = None
        self._stopped = False
        self._fire_lock = threading.Lock()
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._wfd, False)
        self._thread = threading.Thread(
            target=self._run, name="shutdown_scope watchdog", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Never fire from now on; join the thread. Idempotent."""
        with self._fire_lock:
            self._stopped = True
        self._wake()
        if self._thread.is_alive():
            self._thread.join()
        for fd in (self._rfd, self._wfd):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._rfd = self._wfd = -1

    def close(self) -> None:
        """Release the thread and its pipe (``stop()`` if not done yet)."""
        self.stop()

    def arm(self, seconds: float, exit_code: int) -> None:
        """Fire ``seconds`` from now unless stopped first. Only moves earlier."""
        if math.isinf(seconds):
            return
        deadline = time.monotonic() + seconds
        if deadline < self._deadline:
            self._exit_code = exit_code
            self._deadline = deadline
            self._wake()

    def fire_now(self, why: str, exit_code: int) -> None:
        """Dump and exit as soon as the thread runs (signal-handler safe)."""
        self._exit_code = exit_code
        self._fire_now = why
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # full pipe: it is awake anyway
            os.write(self._wfd, b"!")

    def _run(self) -> None:
        if self._block and hasattr(signal, "pthread_sigmask"):
            # Let process-directed signals go to the main thread, whose handler
            # is the one that counts them.
            signal.pthread_sigmask(signal.SIG_BLOCK, self._block)
        while True:
            timeout = None
            if not math.isinf(self._deadline):
                timeout = max(0.0, self._deadline - time.monotonic())
            readable, _, _ = select.select([self._rfd], [], [], timeout)
            if readable:
                with contextlib.suppress(OSError):
                    os.read(self._rfd, 512)
            if self._stopped:
                return
            if self._fire_now is not None:
                self._fire(self._fire_now)
            elif time.monotonic() >= self._deadline:
                self._fire("the shutdown budget is spent")

    def _fire(self, why: str) -> None:
        with self._fire_lock:
            if self._stopped:
                return
            code = self._exit_code
            err = sys.__stderr__
            parts = [f"shutdown_scope watchdog: {why}; exiting with code {code}\n"]
            parts.extend(_safely(part) for part in (self._describe, self._dump_tasks))
            if err is not None:
                with contextlib.suppress(Exception):
                    err.write("".join(parts))
                    err.write("threads:\n")
                    err.flush()
                    faulthandler.dump_traceback(file=err, all_threads=True)
                    err.flush()
            os._exit(code)
