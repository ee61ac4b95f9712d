"""examples/redis_consumer.py against a real redis-server, stopped by real signals.

Each test starts its own ``redis-server`` (Debian's redis-server package) on a
Unix socket, with no persistence, and runs the consumer as a child process on
asyncio and on Trio. What the consumer did is read from Redis itself (the
group's pending list, its last delivered ID, the server's count of XACK calls),
from the file where the consumer writes each entry it handled, and from the
JSON report; log lines only tell the test when to send the signal.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
from _redis_server import (
    GROUP,
    REDIS_SERVER,
    STREAM,
    Redis,
    Relay,
    redis_server,
    wait_until,
)
from _spawn import Child

CONSUMER = str(Path(__file__).parent.parent / "examples" / "redis_consumer.py")
NAME = "worker-1"  # the consumer's name in every run: a restart of one consumer

pytestmark = [
    pytest.mark.subprocess,
    pytest.mark.skipif(
        REDIS_SERVER is None,
        reason="no redis-server program: install Debian's redis-server package"
        " (apt-get install redis-server; .ci/run does as root)",
    ),
    pytest.mark.parametrize("backend", ["asyncio", "trio"]),
]


@pytest.fixture
def redis() -> Iterator[Redis]:
    with redis_server() as server:
        yield server


def order_key(entry_id: str) -> tuple[int, int]:
    millis, sequence = entry_id.split("-")
    return int(millis), int(sequence)


def handled_ids(output: Path) -> list[str]:
    """The IDs the consumer wrote to ``--output``, in the order it handled them."""
    if not output.exists():
        return []
    return [json.loads(line)["id"] for line in output.read_text().splitlines()]


@contextmanager
def consumer(backend: str, address: str, *options: str) -> Iterator[Child]:
    argv = ["--backend", backend, "--redis", address, "--consumer", NAME, "--json"]
    with Child(CONSUMER, *argv, *options) as child:
        ready = child.wait_for("ready pid=")
        assert ready == f"ready pid={child.proc.pid}"
        yield child


def stop(child: Child) -> tuple[int, dict[str, Any]]:
    """SIGTERM, then the exit code and the JSON report."""
    child.send(signal.SIGTERM)
    code = child.finish()
    report = json.loads(child.lines[-1])
    assert isinstance(report, dict), child.output
    return code, report


def next_run(
    backend: str, redis: Redis, last_id: str, output: Path, *options: str
) -> list[str]:
    """Run the consumer again until it acknowledged ``last_id``, then SIGTERM it.

    Returns:
        The IDs it handled, in order.
    """
    options += ("--work-time", "0.01", "--output", str(output))
    with consumer(backend, redis.address, *options) as child:
        child.wait_for(f"entry {last_id}: acknowledged")
        code, report = stop(child)
    assert code == 0, child.output
    assert report["clean"] is True
    return handled_ids(output)


def entry_labels(ids: list[str]) -> list[str]:
    return [f"consumer: entry {i}" for i in ids]


def test_sigterm_finishes_the_batch_in_hand_and_leaves_the_rest_for_the_next_run(
    backend: str, redis: Redis, tmp_path: Path
) -> None:
    ids = redis.add_orders(20)
    first = tmp_path / "first.jsonl"
    options = ("--count", "3", "--work-time", "0.1", "--output", str(first))
    with consumer(backend, redis.address, *options) as child:
        child.wait_for(f"entry {ids[3]}: handling")  # the second batch: 3, 4, 5
        code, report = stop(child)
    assert code == 0, child.output
    assert report["clean"] is True
    phases = report["phases"]
    assert isinstance(phases, list)
    in_flight_at_stop = phases[0]["in_flight"]
    assert in_flight_at_stop, "SIGTERM came with no entry in flight"
    handled = handled_ids(first)
    # Whole batches of 3, in stream order: the batch in hand when SIGTERM came
    # was finished, and no batch was taken after it.
    assert handled == ids[: len(handled)]
    assert len(handled) % 3 == 0, child.output
    assert 6 <= len(handled) < len(ids), child.output
    assert set(in_flight_at_stop) <= set(entry_labels(handled))
    # Every handled entry was acknowledged, with one XACK each.
    pending = redis.pending()
    assert set(pending).isdisjoint(handled)
    assert redis.xack_calls() == len(handled)
    # The rest is not acknowledged and not lost: still in the stream, and
    # either never delivered or pending for this consumer (a read cut by the
    # SIGTERM after Redis had sent its entries).
    rest = ids[len(handled) :]
    assert redis.stream_ids() == ids
    last = order_key(redis.last_delivered_id())
    for entry_id in rest:
        assert order_key(entry_id) > last or pending[entry_id] == (NAME, 1)

    assert next_run(backend, redis, ids[-1], tmp_path / "second.jsonl") == rest
    assert redis.pending() == {}
    assert redis.xack_calls() == len(ids)


def test_entries_cut_at_the_drain_deadline_stay_pending_and_the_next_run_handles_them(
    backend: str, redis: Redis, tmp_path: Path
) -> None:
    ids = redis.add_orders(4)
    first = tmp_path / "first.jsonl"
    options = ("--count", "3", "--work-time", "60", "--drain-timeout", "0.3")
    with consumer(backend, redis.address, *options, "--output", str(first)) as child:
        child.wait_for(f"entry {ids[0]}: handling")
        code, report = stop(child)
    assert code == 1, child.output
    assert report["clean"] is False
    [service] = report["services"]
    assert service["outcome"] == "cancelled"
    # The whole batch was in flight; none of it was handled or acknowledged.
    assert service["cancelled_in_flight"] == entry_labels(ids[:3])
    assert handled_ids(first) == []
    assert redis.xack_calls() == 0
    assert redis.pending() == dict.fromkeys(ids[:3], (NAME, 1))
    assert redis.last_delivered_id() == ids[2]  # the fourth was never taken

    # At least once: the cut entries first (the second time each was
    # delivered; two reads of this consumer's pending list), then the one the
    # first run never took.
    second = tmp_path / "second.jsonl"
    assert next_run(backend, redis, ids[-1], second, "--count", "2") == ids
    assert redis.pending() == {}
    assert redis.xack_calls() == len(ids)


def test_an_entry_deleted_while_pending_is_acknowledged_with_nothing_to_handle(
    backend: str, redis: Redis, tmp_path: Path
) -> None:
    ids = redis.add_orders(3)
    # A run of this consumer took the first two and stopped before handling
    # them; then the first was deleted from the stream.
    redis.call("XGROUP", "CREATE", STREAM, GROUP, "0")
    redis.call("XREADGROUP", "GROUP", GROUP, NAME, "COUNT", 2, "STREAMS", STREAM, ">")
    assert redis.call("XDEL", STREAM, ids[0]) == 1
    assert set(redis.pending()) == set(ids[:2])
    handled = next_run(backend, redis, ids[-1], tmp_path / "handled.jsonl")
    assert handled == ids[1:]
    assert redis.pending() == {}
    assert redis.xack_calls() == 3


def test_a_reply_cut_at_stopping_leaves_its_entry_pending_for_the_next_run(
    backend: str, redis: Redis, tmp_path: Path
) -> None:
    first = tmp_path / "first.jsonl"
    relay = Relay(redis.socket_path)
    try:
        options = ("--block-ms", "60000", "--output", str(first))
        with consumer(backend, relay.address, *options) as child:
            wait_until(redis.consumer_is_blocked, "the consumer waits for entries")
            relay.hold_replies()
            [entry_id] = redis.add_orders(1)
            # Redis delivered it: the entry is this consumer's, pending, and
            # the reply carrying it is on its way.
            wait_until(lambda: entry_id in redis.pending(), "the entry is delivered")
            code, report = stop(child)
    finally:
        relay.close()
    assert code == 0, child.output
    assert report["clean"] is True
    # The consumer stopped waiting by itself as the shutdown began (it was not
    # cancelled as an idle service after the drain).
    [service] = report["services"]
    assert service["outcome"] == "returned"
    assert handled_ids(first) == []
    assert redis.pending() == {entry_id: (NAME, 1)}

    second = tmp_path / "second.jsonl"
    assert next_run(backend, redis, entry_id, second) == [entry_id]
    assert redis.pending() == {}
    assert redis.xack_calls() == 1


def writing_to_a_full_pipe(pid: int) -> bool:
    """A thread of ``pid`` is blocked writing to a pipe (Linux: its wchan)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with suppress(OSError):
            if "pipe_write" in (task / "wchan").read_text():
                return True
    return False


def read_all(fd: int) -> bytes:
    data = b""
    with suppress(BlockingIOError):
        while chunk := os.read(fd, 65536):
            data += chunk
    return data


def test_an_entry_handled_as_the_drain_deadline_passes_is_still_acknowledged(
    backend: str, redis: Redis, tmp_path: Path
) -> None:
    [entry_id] = redis.add_orders(1)
    # --output is a FIFO whose buffer the test fills: the consumer's handling
    # ends with a write that blocks until the test reads, which it does only
    # once the drain deadline has passed and the scope has cancelled the entry.
    fifo = tmp_path / "handled.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    filler = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    try:
        with suppress(BlockingIOError):
            while True:
                os.write(filler, b"\n" * 4096)
        options = ("--work-time", "0", "--drain-timeout", "0.3", "--output", str(fifo))
        with consumer(backend, redis.address, *options) as child:
            child.wait_for(f"entry {entry_id}: handling")
            wait_until(
                lambda: writing_to_a_full_pipe(child.proc.pid),
                "the consumer's write to --output blocks",
            )
            child.send(signal.SIGTERM)
            child.wait_for("shutdown_scope: CANCELLING")
            written = read_all(reader)  # the write completes: the handling ends
            code = child.finish()
            report = json.loads(child.lines[-1])
        written += read_all(reader)
    finally:
        os.close(filler)
        os.close(reader)
    # The scope cancelled the entry it saw in flight at the deadline...
    assert code == 1, child.output
    [service] = report["services"]
    assert service["cancelled_in_flight"] == entry_labels([entry_id])
    # ...but its handling had ended by then, and it was acknowledged: the
    # cancellation did not make it pending, to be handled a second time.
    [line] = [line for line in written.splitlines() if line]
    assert json.loads(line)["id"] == entry_id
    assert redis.pending() == {}
    assert redis.xack_calls() == 1
