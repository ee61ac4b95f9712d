"""Child programs for test_process_signals.py, run as ``python tests/_children.py``.

``serve``: a scope with one service, ``worker``, holding one job in flight. The
job starts its ``--work`` seconds only once the worker is asked to stop, so a
signal always finds it in flight, however slow the machine. ``--behaviour``:

- ``drain``: the job finishes if the drain gives it time;
- ``stubborn``: on cancellation it keeps going, ``--work`` seconds more, in an
  (unbounded) shielded scope;
- ``blocked``: once asked to stop it blocks the event loop with ``time.sleep``;
- ``blocked-when-cancelled``: on cancellation it blocks the event loop;
- ``hung``: the scope's body blocks the event loop before any signal.

``--request`` stops the scope with ``request_shutdown()`` instead of a signal;
``--no-hard-exit`` opens it with ``hard_exit=False``.

``other-thread``: SIGTERM sent to a thread that is not the main one.

``restore``: a scope stopped by a signal; then the handlers in force before it
are checked, and the program waits for one more signal.

Markers on stdout (flushed at once) tell the test when to act; the library logs
to stderr, which the test merges into the same pipe.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio

import shutdown_scope
from shutdown_scope import Phase, ShutdownToken, graceful_scope

if TYPE_CHECKING:
    from types import FrameType

    from anyio.abc import TaskStatus

SIGNALS = (signal.SIGTERM, signal.SIGINT)


def say(text: str) -> None:
    sys.stdout.write(f"{text}\n")
    sys.stdout.flush()


async def worker(
    token: ShutdownToken,
    behaviour: str,
    work: float,
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    with token.in_flight("job 1"):
        task_status.started()
        await token.wait_phase(Phase.STOPPING)
        if behaviour == "blocked":
            say("blocking the loop")
            time.sleep(60)  # noqa: ASYNC251 -- the point: the loop cannot run
        try:
            await anyio.sleep(work)
        except anyio.get_cancelled_exc_class():
            say("job cancelled")
            if behaviour == "stubborn":
                say("ignoring cancel")
                with anyio.CancelScope(shield=True):  # unbounded on purpose
                    await anyio.sleep(work)
            if behaviour == "blocked-when-cancelled":
                say("blocking the loop")
                time.sleep(60)  # noqa: ASYNC251 -- a cleanup that blocks the loop
            raise
    say("job done")


def spy_on(sig: signal.Signals) -> None:
    """Print a line each time the handler in force for ``sig`` is called."""
    inner = signal.getsignal(sig)
    assert callable(inner)

    def spy(signum: int, frame: FrameType | None) -> None:
        # os.write, not print: this may interrupt a print in progress.
        os.write(1, f"spy: handler called for {signal.Signals(signum).name}\n".encode())
        inner(signum, frame)

    signal.signal(sig, spy)


async def serve(opts: argparse.Namespace) -> None:
    async with graceful_scope(
        drain_timeout=opts.drain,
        cancel_timeout=opts.cancel,
        hard_exit=not opts.no_hard_exit,
        hard_exit_code=opts.hard_exit_code,
    ) as scope:
        await scope.start(worker, opts.behaviour, opts.work, name="worker")
        if opts.spy:
            spy_on(signal.SIGTERM)
        say(f"ready pid={os.getpid()}")
        if opts.request:
            scope.request_shutdown("asked by the child")
        if opts.behaviour == "hung":
            say("blocking the loop")
            time.sleep(60)  # noqa: ASYNC251 -- hung before any signal
    say("REPORT " + json.dumps(scope.report.as_dict()))
    if opts.linger:
        time.sleep(opts.linger)  # noqa: ASYNC251 -- linger past the whole budget
        say("lingered")


def custom_handler(signum: int, frame: FrameType | None) -> None:
    say(f"custom handler: {signal.Signals(signum).name}")
    raise SystemExit(42)


Handlers = dict[signal.Signals, Callable[..., Any] | int | None]


def handlers() -> Handlers:
    return {sig: signal.getsignal(sig) for sig in SIGNALS}


def same_handlers(before: Handlers) -> bool:
    """The very same handler objects are in force as in ``before``."""
    now = handlers()
    return all(now[sig] is before[sig] for sig in SIGNALS)


def restore(opts: argparse.Namespace) -> None:
    if opts.custom:
        for sig in SIGNALS:
            signal.signal(sig, custom_handler)
    before_run = handlers()

    async def main() -> None:
        before_scope = handlers()  # asyncio and trio install their own SIGINT handler
        async with graceful_scope(drain_timeout=5, cancel_timeout=5) as scope:
            await scope.start(worker, "drain", 0.0, name="worker")
            say(f"ready pid={os.getpid()}")
        say(f"shutdown clean: {scope.report.clean}")
        say(f"restored in the loop: {same_handlers(before_scope)}")

    anyio.run(main, backend=opts.backend)
    say(f"restored after the run: {same_handlers(before_run)}")
    say("waiting for a signal")
    time.sleep(30)
    say("no signal arrived")


def other_thread(opts: argparse.Namespace) -> None:
    """SIGTERM delivered to a thread other than the main one (the kernel may pick
    any thread that does not block it), while the loop sleeps with nothing to do."""
    ready = threading.Event()

    def signal_myself() -> None:
        ready.wait()
        time.sleep(0.2)  # let the loop fall asleep: nothing else will wake it
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)

    async def idle(
        token: ShutdownToken,
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        task_status.started()
        await anyio.sleep_forever()

    async def main() -> None:
        async with graceful_scope() as scope:
            await scope.start(idle)
            threading.Thread(target=signal_myself).start()
            ready.set()
        say(f"stopped by {scope.report.signal!r}")

    shutdown_scope.run(main, backend=opts.backend)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("program", choices=["serve", "restore", "other-thread"])
    parser.add_argument("--backend", choices=["asyncio", "trio"], required=True)
    behaviours = ["drain", "stubborn", "blocked", "blocked-when-cancelled", "hung"]
    parser.add_argument("--behaviour", choices=behaviours, default="drain")
    parser.add_argument("--work", type=float, default=0.3)
    parser.add_argument("--drain", type=float, default=20.0)
    parser.add_argument("--cancel", type=float, default=20.0)
    parser.add_argument("--hard-exit-code", type=int, default=None)
    parser.add_argument("--no-hard-exit", action="store_true")
    parser.add_argument("--linger", type=float, default=0.0)
    parser.add_argument("--spy", action="store_true")
    parser.add_argument("--request", action="store_true", help="stop without a signal")
    parser.add_argument("--custom", action="store_true")
    parser.add_argument("--log-json", action="store_true", help="JsonFormatter logs")
    return parser.parse_args()


if __name__ == "__main__":
    options = parse_args()
    log_format = "%(name)s %(levelname)s %(message)s"
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format=log_format)
    if options.log_json:
        from shutdown_scope.logging import JsonFormatter

        logging.getLogger().handlers[0].setFormatter(JsonFormatter())
    if options.program == "restore":
        restore(options)
    elif options.program == "other-thread":
        other_thread(options)
    else:
        shutdown_scope.run(serve, options, backend=options.backend)
