"""Leave the process at once, skipping the interpreter's teardown.

The teardown (freeing every module, running finalizers) takes milliseconds to
tens of milliseconds after the work is done: a supervisor waiting for the exit
waits for it too. ``exit_now`` does first what a normal exit does that another
program can see, then ``os._exit``. It imports only what a bare interpreter has.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys

TYPE_CHECKING = False  # typing itself costs milliseconds in the launcher
if TYPE_CHECKING:
    from typing import NoReturn

__all__ = ["exit_now"]


def exit_now(code: int) -> NoReturn:
    """Run the ``atexit`` handlers, flush logging and stdio, then ``os._exit(code)``."""
    atexit._run_exitfuncs()  # noqa: SLF001 -- the handlers the exit would run
    _flush_and_exit(code)


# No coverage tool sees this run: its own atexit handler, just above, has saved
# its data and stopped. tests/test_launcher_fast_path.py checks what it does.
def _flush_and_exit(code: int) -> NoReturn:  # pragma: no cover
    logging = sys.modules.get("logging")  # not imported: nothing to flush
    if logging is not None:
        logging.shutdown()  # flushes and closes every handler
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            # Closed, or a broken pipe: exit all the same.
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
    os._exit(code)
