"""Run an example app whose event loop stops when the drain begins, until SIGUSR1.

``python tests/_pause_at_drain.py SCRIPT [ARGS...]`` runs SCRIPT as ``__main__``.
When the scope logs that it enters DRAINING (just before the servers close their
listeners), the main thread, which runs the event loop, prints ``paused at
drain`` and blocks until SIGUSR1 arrives (at most 20 s). Connections made
meanwhile wait in the kernel's accept queue: the server must take them before
it closes its listener, or the kernel resets them.
"""

from __future__ import annotations

import logging
import runpy
import signal
import sys

_RESUME = signal.SIGUSR1
_LONGEST_PAUSE = 20.0


def _say(text: str) -> None:
    sys.stdout.write(f"{text}\n")
    sys.stdout.flush()


class _PauseAtDrain(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.paused = False

    def emit(self, record: logging.LogRecord) -> None:
        if self.paused or not record.getMessage().startswith(
            "shutdown_scope: DRAINING"
        ):
            return
        self.paused = True
        _say("paused at drain")
        if signal.sigtimedwait([_RESUME], _LONGEST_PAUSE) is None:
            _say("no SIGUSR1: resumed after the longest pause")


if __name__ == "__main__":
    # Blocked before any thread starts, so that every thread inherits the mask
    # and the signal waits for sigtimedwait() instead of ending the process.
    signal.pthread_sigmask(signal.SIG_BLOCK, [_RESUME])
    # On the library's logger, not the root one: the app's basicConfig() must
    # still configure the root logger.
    logging.getLogger("shutdown_scope").addHandler(_PauseAtDrain())
    script = sys.argv[1]
    sys.argv = sys.argv[1:]
    sys.path.insert(0, script.rsplit("/", 1)[0])
    runpy.run_path(script, run_name="__main__")
