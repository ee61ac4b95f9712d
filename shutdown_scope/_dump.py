"""The diagnostic dump on demand (``graceful_scope(dump_signal=...)``).

Like go-zero's SIGUSR1 and Go's SIGQUIT dump, without stopping anything: the
scope's phase, its work in flight by label with its age, what holds a drain
open, the async task tree and every thread's stack.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
import traceback

from ._backend import LoopHandle
from ._labels import printable_label
from ._state import ShutdownState
from .signals import SignalReceiver

__all__ = ["format_dump", "serve_dumps"]

logger = logging.getLogger("shutdown_scope")


def _threads() -> str:
    names = {t.ident: t.name for t in threading.enumerate()}
    out = ["threads:\n"]
    for ident, frame in sys._current_frames().items():  # noqa: SLF001 -- the stdlib's way
        out.append(f"  thread {names.get(ident, '?')!r} ({ident}):\n")
        out.extend(f"    {line}" for line in traceback.format_stack(frame))
    return "".join(out)


def format_dump(state: ShutdownState, handle: LoopHandle, sig: signal.Signals) -> str:
    """The dump's text (on the loop thread)."""
    now = time.monotonic()
    lines = [
        f"shutdown_scope dump ({sig.name}), pid {os.getpid()}:\n",
        f"  phase: {state.phase.name}; reason: {state.reason}\n",
    ]
    ages = state.body.node.ages(now)
    lines.append(f"  in flight ({len(ages)}):\n")
    lines.extend(f"    {printable_label(label)}: {age:.3f} s\n" for label, age in ages)
    holds = state.body.node.hold_names()
    if holds:
        lines.append(f"  closing itself: {', '.join(holds)}\n")
    for svc in state.services:
        status = svc.cell.phase.name if svc.started else "starting"
        if svc.done.is_set():
            status = f"ended ({svc.outcome})"
        lines.append(f"  service {svc.name!r}: {status}\n")
    lines.append(handle.dump_tasks())
    lines.append(_threads())
    return "".join(lines)


async def serve_dumps(
    state: ShutdownState, handle: LoopHandle, receiver: SignalReceiver
) -> None:
    """Write a dump to stderr and the logger at each signal, until cancelled."""
    async for sig in receiver:
        text = format_dump(state, handle, sig)
        err = sys.stderr
        if err is not None:
            with contextlib.suppress(Exception):  # a closed stderr stops nothing
                err.write(text)
                err.flush()
        # INFO: without logging configured, stderr shows it once, not twice.
        logger.info("%s", text.rstrip("\n"), extra={"event": "dump"})
