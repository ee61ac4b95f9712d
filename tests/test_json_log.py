"""shutdown_scope.logging.JsonFormatter: the scope's events as JSON lines."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import anyio
import pytest
from anyio.abc import TaskStatus
from trio.testing import MockClock

from shutdown_scope import ShutdownToken, graceful_scope
from shutdown_scope.logging import JsonFormatter


@pytest.fixture
def json_lines() -> Any:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("shutdown_scope")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield lambda: [json.loads(line) for line in out.getvalue().splitlines()]
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.mark.anyio
async def test_a_stop_cut_at_the_deadline_as_events(
    mock_clock: MockClock, json_lines: Any
) -> None:
    async def worker(token: ShutdownToken, *, task_status: TaskStatus[None]) -> None:
        task_status.started()
        with token.in_flight("job\n1"):
            await anyio.sleep_forever()

    async with graceful_scope(drain_timeout=2, signals=(), hard_exit=False) as scope:
        await scope.start(worker)
        scope.request_shutdown("test")
    lines = json_lines()
    assert all(line["logger"] == "shutdown_scope" for line in lines)
    seen = [(line["event"], line.get("phase")) for line in lines]
    assert seen == [
        ("shutdown_begins", None),
        ("phase", "STOPPING"),
        ("phase", "DRAINING"),
        ("phase", "CANCELLING"),
        ("in_flight_cancelled", None),
        ("report", None),
    ]
    begins, _, draining, _, cancelled, report = lines
    assert (begins["trigger"], begins["reason"], begins["signal"]) == (
        "request",
        "test",
        None,
    )
    assert draining["in_flight"] == ["worker: job\n1"]  # the true label
    assert (cancelled["service"], cancelled["in_flight"]) == (
        "worker",
        ["worker: job\n1"],
    )
    assert (report["level"], report["clean"], report["exit_code"]) == (
        "WARNING",
        False,
        1,
    )
    assert report["report"] == json.loads(json.dumps(scope.report.as_dict()))


def test_one_line_per_record_whatever_it_holds() -> None:
    formatter = JsonFormatter()
    logger = logging.getLogger("test_json_log")
    error = ValueError("bad\nvalue")
    record = logger.makeRecord(
        "test_json_log",
        logging.ERROR,
        __file__,
        1,
        "two\nlines: %s",
        ("ünï",),
        exc_info=(ValueError, error, None),
        extra={"event": "x", "thing": object(), "when": 1.5},
    )
    line = formatter.format(record)
    assert "\n" not in line
    assert line.isascii()
    parsed = json.loads(line)
    assert parsed["message"] == "two\nlines: ünï"
    assert (parsed["event"], parsed["when"], parsed["level"]) == ("x", 1.5, "ERROR")
    assert parsed["thing"].startswith("<object object at")
    assert "ValueError: bad\nvalue" in parsed["exception"]
    assert not {"args", "msg", "exc_info", "levelno"} & set(parsed)
