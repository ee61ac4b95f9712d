"""Signals as a process-wide registry, like Go's ``os/signal``.

``open_signal_receiver(*signals)`` is a drop-in for trio's and anyio's: an async
context manager yielding an async iterator of signal numbers. Unlike those,
any number of receivers (and a running ``graceful_scope``) may ask for the same
signal, and every one gets a copy:

* the handler is installed with the first receiver of a signal and the handler
  that was there before (the exact object) comes back after the last one;
* once a receiver's block has exited, nothing more is delivered to it (signals
  it had not read are dropped, as after Go's ``signal.Stop``);
* delivery never blocks the signal handler: each receiver has a bounded
  buffer, and a signal that finds it full is dropped and counted
  (``receiver.dropped``), as Go drops on a full buffered channel.

Only the main thread may open a receiver (Python sets handlers there only).

**A nested graceful_scope.** A scope owns the signals it stops on: a second
scope asking for one of them while the first is open raises ``RuntimeError``
(two owners would both escalate and exit on one Ctrl-C). Receivers are not
owners: open as many beside a scope as you like.

**SIGPIPE.** Python starts with SIGPIPE ignored, so a write to a closed pipe or
socket raises ``BrokenPipeError`` and the process lives on. (Go differs by fd: a
write to a broken stdout or stderr kills the program with SIGPIPE, any other fd
returns ``EPIPE``.) The scopes here never touch SIGPIPE. Receiving it through
this registry installs a handler instead of ``SIG_IGN`` for as long as you
listen: writes still fail with ``BrokenPipeError``, and ``SIG_IGN`` is back
after the last receiver.
"""

from __future__ import annotations

import signal
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import final

import anyio

from ._backend import LoopHandle, current_loop_handle
from ._phases import validate_signals
from ._signal_registry import subscribe

__all__ = ["SignalReceiver", "open_signal_receiver"]


@final
class SignalReceiver:
    """The signals one receiver got, in order: ``async for signum in receiver``."""

    def __init__(self, handle: LoopHandle, buffer_size: int) -> None:
        self._handle = handle
        self._buffer_size = buffer_size
        self._pending: deque[signal.Signals] = deque()
        self._ready = anyio.Event()
        self._closed = False
        self._dropped = 0

    @property
    def dropped(self) -> int:
        """Signals dropped because the buffer was full."""
        return self._dropped

    def _deliver(self, signum: int) -> None:
        """Runs inside the signal handler: only signal-safe calls here."""
        if self._closed:
            return
        if len(self._pending) >= self._buffer_size:
            self._dropped += 1
            return
        self._pending.append(signal.Signals(signum))
        self._handle.run_sync_soon(self._wake)

    def _wake(self) -> None:
        self._ready.set()

    def __aiter__(self) -> SignalReceiver:
        return self

    async def __anext__(self) -> signal.Signals:
        """The next signal; waits for one. A checkpoint.

        Raises:
            StopAsyncIteration: the receiver's block has exited.
        """
        while not self._pending:
            if self._closed:
                raise StopAsyncIteration
            self._ready = anyio.Event()
            await self._ready.wait()
        await anyio.lowlevel.checkpoint_if_cancelled()
        return self._pending.popleft()

    def _close(self) -> None:
        self._closed = True
        self._pending.clear()
        self._ready.set()


@asynccontextmanager
async def open_signal_receiver(
    *signals: int, buffer_size: int = 64
) -> AsyncIterator[SignalReceiver]:
    """Receive copies of ``signals`` while the block runs.

    Args:
        signals: signal numbers (``signal.SIGUSR1``...): at least one.
        buffer_size: signals held for this receiver until read; one more is
            dropped and counted in ``receiver.dropped``.

    Raises:
        TypeError, ValueError: no signals, an unknown or uncatchable one, or a
            buffer_size that is not a positive int.
        RuntimeError: not called from the main thread.
    """
    sigs = validate_signals(signals)
    if not sigs:
        msg = "open_signal_receiver() needs at least one signal"
        raise ValueError(msg)
    if isinstance(buffer_size, bool) or not isinstance(buffer_size, int):
        msg = f"buffer_size must be an int, not {buffer_size!r}"
        raise TypeError(msg)
    if buffer_size < 1:
        msg = f"buffer_size must be >= 1, not {buffer_size}"
        raise ValueError(msg)
    handle = current_loop_handle()
    receiver = SignalReceiver(handle, buffer_size)
    deliver = receiver._deliver  # noqa: SLF001 -- our own
    subscription = subscribe(sigs, deliver, what="open_signal_receiver()")
    try:
        with handle.wake_on_signals():
            yield receiver
    finally:
        subscription.close()
        receiver._close()  # noqa: SLF001 -- our own
