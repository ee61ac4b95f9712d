"""A queue worker that stops without losing the message it is handling.

Three services, started in this order and stopped in the reverse one:

- ``db-pool``: a (fake) database pool that every message handler uses;
- ``producer``: stands in for a message broker, queueing a message now and then;
- ``consumer``: takes one message at a time and handles it with the pool.

On SIGTERM or Ctrl-C the consumer takes no new message, finishes the one in
hand, and only then does the pool close. Run it, then press Ctrl-C::

    python examples/worker.py --backend trio --work-time 2

With ``--drain-timeout 1 --work-time 5`` the message cannot finish in time: it
is cancelled, the report names it, and the exit code is 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio

import shutdown_scope
from shutdown_scope import ShutdownToken, graceful_scope

if TYPE_CHECKING:
    from anyio.abc import TaskStatus
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

log = logging.getLogger("worker")


class Pool:
    """A fake database pool: queries fail once it is closed."""

    def __init__(self) -> None:
        self.closed = False

    async def execute(self, statement: str, *params: object, duration: float) -> None:
        """Run ``statement`` with ``params``, taking ``duration`` s. A checkpoint."""
        if self.closed:
            msg = f"the pool is closed: cannot run {statement!r} with {params!r}"
            raise RuntimeError(msg)
        await anyio.sleep(duration)

    async def aclose(self) -> None:
        """Close the connections. A checkpoint."""
        self.closed = True
        await anyio.sleep(0.01)


async def run_pool(
    token: ShutdownToken, *, task_status: TaskStatus[Pool] = anyio.TASK_STATUS_IGNORED
) -> None:
    """Open the pool, hand it to the scope, and close it when this service stops."""
    pool = Pool()
    log.info("pool: open")
    task_status.started(pool)
    try:
        # Nothing to watch: the scope cancels this service when its turn comes,
        # after every service started later has stopped.
        await anyio.sleep_forever()
    finally:
        # Cancelled, but closing still gets a bounded window.
        with token.shield_cleanup():
            await pool.aclose()
        log.info("pool: closed")


async def produce(
    token: ShutdownToken, queue: MemoryObjectSendStream[int], interval: float
) -> None:
    """Queue message 1, 2, 3, ... every ``interval`` seconds until asked to stop."""
    n = 0
    while not token.stop_requested:
        n += 1
        await queue.send(n)
        await anyio.sleep(interval)


async def consume(
    token: ShutdownToken,
    queue: MemoryObjectReceiveStream[int],
    pool: Pool,
    work_time: float,
) -> None:
    """Handle one message at a time; once asked to stop, take no new one."""
    # Waiting for a message is not work in flight: take() stops waiting at
    # STOPPING, and still yields a message handed over as the stop begins.
    async for n in token.take(queue):
        # The drain waits for this block; past the drain deadline it is cancelled.
        with token.in_flight(f"message {n}"):
            log.info("message %d: in flight", n)
            sql = "UPDATE orders SET done = true WHERE id = $1"
            await pool.execute(sql, n, duration=work_time)
        log.info("message %d: done", n)


@dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    """The command line, typed."""

    backend: str
    drain_timeout: float
    cancel_timeout: float
    work_time: float
    interval: float
    json: bool


async def main(opts: Options) -> None:
    """Run the three services until a signal stops them, then print the report."""
    send, receive = anyio.create_memory_object_stream[int](max_buffer_size=10)
    with send, receive:
        async with graceful_scope(
            drain_timeout=opts.drain_timeout, cancel_timeout=opts.cancel_timeout
        ) as scope:
            pool = await scope.start(run_pool, name="db-pool")  # first up, last down
            scope.start_soon(produce, send, opts.interval, name="producer")
            scope.start_soon(consume, receive, pool, opts.work_time, name="consumer")
            print(f"ready pid={os.getpid()}", flush=True)
    if opts.json:
        print(json.dumps(scope.report.as_dict()), flush=True)
    else:
        print(scope.report, flush=True)


def parse_args() -> Options:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    add = parser.add_argument
    add("--backend", choices=["asyncio", "trio"], default="asyncio")
    add("--drain-timeout", type=float, default=20.0, metavar="S", help="default: 20")
    add("--cancel-timeout", type=float, default=5.0, metavar="S", help="default: 5")
    add("--work-time", type=float, default=1.0, metavar="S", help="per message")
    add("--interval", type=float, default=0.5, metavar="S", help="between messages")
    add("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args()
    return Options(
        backend=args.backend,
        drain_timeout=args.drain_timeout,
        cancel_timeout=args.cancel_timeout,
        work_time=args.work_time,
        interval=args.interval,
        json=args.json,
    )


if __name__ == "__main__":
    options = parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(relativeCreated)6.0f ms %(message)s"
    )
    shutdown_scope.run(main, options, backend=options.backend)
