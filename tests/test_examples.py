"""The example programs, run as real processes and stopped with real signals."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import pytest
from _spawn import Child

WORKER = str(Path(__file__).parent.parent / "examples" / "worker.py")

pytestmark = [
    pytest.mark.subprocess,
    pytest.mark.parametrize("backend", ["asyncio", "trio"]),
]


def start_worker(backend: str, *options: str) -> Child:
    child = Child(WORKER, "--backend", backend, "--interval", "0.05", *options)
    ready = child.wait_for("ready pid=")
    assert ready == f"ready pid={child.proc.pid}"
    return child


def message_in_flight_at_stop(child: Child) -> int:
    """The message that was in flight when the shutdown began."""
    stopping = child.lines[child.index("shutdown_scope: STOPPING")]
    found = re.search(r"in flight: \['consumer: message (\d+)'\]", stopping)
    assert found, stopping
    return int(found.group(1))


def test_worker_finishes_its_message_before_the_pool_closes(backend: str) -> None:
    with start_worker(backend, "--work-time", "1", "--json") as child:
        child.wait_for(": in flight")
        child.send(signal.SIGTERM)
        assert child.finish() == 0, child.output
        n = message_in_flight_at_stop(child)
        child.assert_in_order(
            "pool: open",
            f"message {n}: in flight",
            "shutdown_scope: STOPPING",
            "shutdown_scope: DRAINING",
            f"message {n}: done",
            "pool: closed",
            "shutdown_scope: shutdown clean (exit code 0)",
        )
        # Once asked to stop, the consumer took no further message.
        assert f"message {n + 1}: in flight" not in child.output
        assert "CANCELLING" not in child.output
        report = json.loads(child.lines[-1])
    assert report["clean"] is True
    assert report["exit_code"] == 0
    assert report["signal"] == signal.SIGTERM
    assert report["phases"][0]["in_flight"] == [f"consumer: message {n}"]
    services = {s["name"]: s for s in report["services"]}
    assert list(services) == ["db-pool", "producer", "consumer"]
    assert services["consumer"]["cancelled_in_flight"] == []
    # Reverse start order: the consumer finished first, the pool last.
    finished = sorted(services, key=lambda name: services[name]["finished_at"])
    assert finished == ["consumer", "producer", "db-pool"]


def test_worker_message_cancelled_past_the_drain_deadline(backend: str) -> None:
    options = ("--drain-timeout", "0.3", "--work-time", "60")
    with start_worker(backend, *options) as child:
        child.wait_for("message 1: in flight")
        child.send(signal.SIGTERM)
        assert child.finish() == 1, child.output
        child.assert_in_order(
            "shutdown_scope: DRAINING; in flight: ['consumer: message 1']",
            "shutdown_scope: CANCELLING; in flight: ['consumer: message 1']",
            "pool: closed",
        )
        assert "message 1: done" not in child.output
        report = child.output[child.output.rindex("shutdown NOT clean (exit code 1)") :]
    assert "service 'db-pool': stopped" in report
    assert "service 'producer': stopped" in report
    consumer = report[report.index("service 'consumer'") :]
    assert consumer.startswith("service 'consumer': cancelled at"), report
    assert "cancelled in flight: consumer: message 1" in consumer, report
