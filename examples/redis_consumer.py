"""A Redis Streams consumer that acknowledges only what it has handled.

It reads a stream as one consumer of a consumer group (``XREADGROUP``),
handles each entry, and acknowledges it (``XACK``) only once handled. On
SIGTERM or Ctrl-C it asks for no new entry, finishes the ones it holds, and
exits 0. Whatever it could not finish before the drain deadline is cancelled,
not acknowledged, and named in the report (exit code 1): Redis keeps it in the
group's pending list, and the next run of this consumer handles it first.
Delivery is at least once: an entry is handled again only if a run stopped
before acknowledging it. Run it against a local Redis, then press Ctrl-C::

    redis-cli XADD orders '*' order 1
    python examples/redis_consumer.py --backend trio --work-time 2

Runs on asyncio and on Trio: it talks to Redis through ``_resp.py``, a small
RESP2 client on anyio streams.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio
from _resp import RedisConnection, RedisError, Reply, open_redis, parse_address
from anyio import AsyncFile

import shutdown_scope
from shutdown_scope import Phase, ShutdownToken, graceful_scope

if TYPE_CHECKING:
    from anyio.abc import TaskStatus

log = logging.getLogger("redis_consumer")


@dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    """The command line, typed."""

    backend: str
    redis: str
    stream: str
    group: str
    consumer: str
    count: int
    block_ms: int
    work_time: float
    output: str | None
    drain_timeout: float
    cancel_timeout: float
    json: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    """One stream entry; ``fields`` is None if it was deleted while pending."""

    id: str
    fields: dict[str, str] | None


async def create_group(redis: RedisConnection, opts: Options) -> None:
    """Create the stream and the consumer group, unless they exist. A checkpoint."""
    # From ID 0: a new group starts at the stream's first entry, so entries
    # added before any consumer ran are not skipped.
    try:
        await redis.command(
            "XGROUP", "CREATE", opts.stream, opts.group, "0", "MKSTREAM"
        )
    except RedisError as error:
        if not str(error).startswith("BUSYGROUP"):
            raise


async def take(
    token: ShutdownToken, redis: RedisConnection, opts: Options, after: str
) -> list[Entry] | None:
    """Up to ``--count`` entries; None once the shutdown began. A checkpoint.

    ``after=">"`` asks for new entries, waiting up to ``--block-ms`` for one;
    any other ID reads this consumer's own pending entries after that ID.
    Called after the shutdown began, it returns None without asking Redis.
    """
    # Waiting for entries is not work in flight: it is cut as the shutdown
    # begins. Redis moves entries to this consumer's pending list as it sends
    # them, so a reply cut on its way leaves them pending, not lost: the next
    # run reads them again (the connection, which would still receive that
    # reply, is unusable from here on and is closed).
    with token.cancel_on(Phase.STOPPING) as waiting:
        reply = await redis.command(
            "XREADGROUP", "GROUP", opts.group, opts.consumer,
            "COUNT", opts.count, "BLOCK", opts.block_ms,
            "STREAMS", opts.stream, after,
        )  # fmt: skip
    if waiting.cancelled_caught:
        return None
    return parse_entries(reply)


def parse_entries(reply: Reply) -> list[Entry]:
    """XREADGROUP's reply for one stream: ``[[stream, [[id, fields], ...]]]``."""
    match reply:
        case None:  # BLOCK timed out
            return []
        case [[bytes(), list(items)]]:
            return [parse_entry(item) for item in items]
    msg = f"unexpected XREADGROUP reply: {reply!r}"
    raise TypeError(msg)


def parse_entry(item: Reply) -> Entry:
    """``[id, [field, value, ...]]``, or ``[id, None]`` for a deleted entry."""
    match item:
        case [bytes(entry_id), None]:
            return Entry(id=entry_id.decode(), fields=None)
        case [bytes(entry_id), list(flat)] if all(type(w) is bytes for w in flat):
            words = [w.decode(errors="replace") for w in flat if type(w) is bytes]
            fields = dict(zip(words[::2], words[1::2], strict=True))
            return Entry(id=entry_id.decode(), fields=fields)
    msg = f"unexpected stream entry: {item!r}"
    raise TypeError(msg)


async def handle(entry: Entry, opts: Options, output: AsyncFile[str] | None) -> None:
    """The work for one entry: here a pause, then a line in ``--output``."""
    log.info("entry %s: handling %s", entry.id, entry.fields)
    await anyio.sleep(opts.work_time)
    if output is not None:
        record = {"id": entry.id, "fields": entry.fields, "pid": os.getpid()}
        await output.write(json.dumps(record) + "\n")
        await output.flush()


async def handle_batch(
    token: ShutdownToken,
    redis: RedisConnection,
    opts: Options,
    entries: list[Entry],
    output: AsyncFile[str] | None,
) -> None:
    """Handle and acknowledge ``entries`` in order.

    They are all in flight from the moment they were received: the drain waits
    for the whole batch. At the drain deadline the report names every entry
    still in flight; those whose handling is cancelled stay pending, and the
    next run handles them.
    """
    with ExitStack() as batch:
        flights = [batch.enter_context(ExitStack()) for _ in entries]
        for flight, entry in zip(flights, entries, strict=True):
            flight.enter_context(token.in_flight(f"entry {entry.id}"))
        for flight, entry in zip(flights, entries, strict=True):
            with flight:  # out of the in-flight list once acknowledged
                if entry.fields is None:
                    log.info("entry %s: deleted while pending; nothing to do", entry.id)
                else:
                    await handle(entry, opts, output)
                # Handled: a cancellation now would only make it handled twice.
                with token.shield_cleanup():
                    await redis.command("XACK", opts.stream, opts.group, entry.id)
                log.info("entry %s: acknowledged", entry.id)


async def consume(
    token: ShutdownToken,
    redis: RedisConnection,
    opts: Options,
    output: AsyncFile[str] | None,
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Handle entries until asked to stop; first those an earlier run left."""
    await create_group(redis, opts)
    task_status.started()
    # ID 0 reads this consumer's pending entries: received by an earlier run
    # (under the same --consumer name) but never acknowledged. Each leaves
    # that list once acknowledged, so reading from 0 again gives the next ones.
    after = "0"
    while (entries := await take(token, redis, opts, after)) is not None:
        if after == "0" and not entries:
            after = ">"  # the earlier runs' entries are done: now new ones
        await handle_batch(token, redis, opts, entries, output)
    log.info("consumer %s: takes no more entries", opts.consumer)


async def main(opts: Options) -> None:
    """Consume until a signal stops the scope, then print the report."""
    async with AsyncExitStack() as resources:
        output = None
        if opts.output is not None:
            file = await anyio.open_file(opts.output, "a", encoding="utf-8")
            output = await resources.enter_async_context(file)
        # Opened before the scope and closed after it: the consumer uses the
        # connection until it has acknowledged its last entry.
        redis = await resources.enter_async_context(open_redis(opts.redis))
        async with graceful_scope(
            drain_timeout=opts.drain_timeout, cancel_timeout=opts.cancel_timeout
        ) as scope:
            await scope.start(consume, redis, opts, output, name="consumer")
            print(f"ready pid={os.getpid()}", flush=True)
    if opts.json:
        print(json.dumps(scope.report.as_dict()), flush=True)
    else:
        print(scope.report, flush=True)


def redis_address(text: str) -> str:
    """An argparse type: a Redis address ``_resp.open_redis`` accepts."""
    try:
        parse_address(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def parse_args() -> Options:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    add = parser.add_argument
    add("--backend", choices=["asyncio", "trio"], default="asyncio")
    add("--redis", type=redis_address, default="redis://localhost:6379",
        metavar="ADDRESS", help="redis://HOST[:PORT] or unix:///PATH")  # fmt: skip
    add("--stream", default="orders", help="default: orders")
    add("--group", default="order-workers", help="default: order-workers")
    add("--consumer", default=socket.gethostname(),
        help="keep it across restarts (default: the hostname)")  # fmt: skip
    add("--count", type=int, default=10, metavar="N", help="entries per read")
    add("--block-ms", type=int, default=5000, metavar="MS", help="default: 5000")
    add("--work-time", type=float, default=1.0, metavar="S", help="per entry")
    add("--output", metavar="PATH", help="append each handled entry as JSON")
    add("--drain-timeout", type=float, default=20.0, metavar="S", help="default: 20")
    add("--cancel-timeout", type=float, default=5.0, metavar="S", help="default: 5")
    add("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args()
    if args.count < 1 or args.block_ms < 1:
        parser.error("--count and --block-ms must be at least 1")
    return Options(
        backend=args.backend,
        redis=args.redis,
        stream=args.stream,
        group=args.group,
        consumer=args.consumer,
        count=args.count,
        block_ms=args.block_ms,
        work_time=args.work_time,
        output=args.output,
        drain_timeout=args.drain_timeout,
        cancel_timeout=args.cancel_timeout,
        json=args.json,
    )


if __name__ == "__main__":
    options = parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(relativeCreated)6.0f ms %(message)s"
    )
    try:
        shutdown_scope.run(main, options, backend=options.backend)
    except OSError as error:  # Redis unreachable, --output unwritable: one line
        sys.exit(f"redis_consumer: {error}")
