"""shutdown_scope.hypercorn.serve: a shutdown during a slow ASGI lifespan.

The subprocess tests run tests/_hypercorn_child.py (a ``db`` service started
first, then the HTTP server, whose app's lifespan startup or shutdown is slow)
on both of hypercorn's workers and send it a real SIGTERM. None may reach the
watchdog's hard exit: the scope stops the startup, or bounds the shutdown, and
the earlier service still stops. The in-process tests check the exact times
on trio's virtual clock.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import anyio
import pytest
from _services import NO_SIGNALS
from _spawn import Child
from anyio.abc import TaskStatus
from hypercorn.config import Config
from trio.testing import MockClock

from shutdown_scope import ServiceNotStartedError, ShutdownToken, graceful_scope
from shutdown_scope.hypercorn import serve

CHILD = str(Path(__file__).parent / "_hypercorn_child.py")

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def report_of(child: Child) -> dict[str, Any]:
    line = child.lines[child.index("REPORT ")]
    report: dict[str, Any] = json.loads(line.split(" ", 1)[1])
    return report


def services(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {service["name"]: service for service in report["services"]}


@pytest.mark.subprocess
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("startup", ["20", "inf"])
def test_a_shutdown_during_the_lifespan_startup_stops_it(
    backend: str, startup: str
) -> None:
    # A budget of 2 s: without the fix, the watchdog exits 143 after it.
    options = ("--startup", startup, "--drain", "1", "--cancel", "1")
    with Child(CHILD, "--backend", backend, *options) as child:
        child.wait_for("lifespan: startup begun")
        child.send(signal.SIGTERM)
        code = child.finish()
    assert code == 1, child.output
    assert "watchdog" not in child.output
    # The start was stopped: the app's startup cancelled, start() raised
    # ServiceNotStartedError(by_shutdown=True), the db stopped after.
    child.assert_in_order(
        "lifespan: startup cancelled", "not started: by_shutdown=True", "db: closed"
    )
    assert "listening" not in child.output
    report = report_of(child)
    assert report["clean"] is False
    assert report["errors"] == []
    # It ended at once, not at the drain deadline (no CANCELLING).
    assert [p["phase"] for p in report["phases"]] == ["STOPPING", "DRAINING"]
    assert report["phases"][0]["in_flight"] == ["http: lifespan startup"]
    found = services(report)
    assert found["http"]["outcome"] == "not started"
    assert found["db"]["outcome"] == "stopped"
    child.assert_in_order("service 'http': not started (stopped while starting)")


@pytest.mark.subprocess
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_lifespan_shutdown_that_hangs_is_cut_within_the_budget(
    backend: str,
) -> None:
    # Cut at 0.5 s, cancelled 1.5 s later: the watchdog's 3.5 s are far off.
    options = ("--shutdown", "inf", "--drain", "0.5", "--cancel", "3")
    with Child(CHILD, "--backend", backend, *options) as child:
        child.wait_for("listening http://")
        child.send(signal.SIGTERM)
        code = child.finish()
    assert code == 1, child.output
    assert "watchdog" not in child.output
    child.assert_in_order(
        "lifespan: shutdown begun",
        "shutdown_scope: CANCELLING",
        "lifespan shutdown did not end",
        "lifespan: shutdown cancelled",
        "db: closed",
    )
    report = report_of(child)
    found = services(report)
    assert found["http"]["outcome"] == "cancelled"
    assert "http: lifespan shutdown" in found["http"]["cancelled_in_flight"]
    assert found["db"]["outcome"] == "stopped"


def config() -> Config:
    result = Config()
    result.bind = ["127.0.0.1:0"]
    result.accesslog = None
    result.startup_timeout = result.shutdown_timeout = 3600
    return result


def lifespan_app(
    startup: float, shutdown: float, events: list[tuple[str, float]]
) -> Callable[[Message, Receive, Send], Awaitable[None]]:
    """An app with no routes whose lifespan startup and shutdown take long."""

    async def step(name: str, seconds: float) -> None:
        try:
            await anyio.sleep(seconds)
        except anyio.get_cancelled_exc_class():
            events.append((f"{name} cancelled", anyio.current_time()))
            raise
        events.append((f"{name} done", anyio.current_time()))

    async def app(scope: Message, receive: Receive, send: Send) -> None:
        assert scope["type"] == "lifespan"
        await receive()
        await step("startup", startup)
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await step("shutdown", shutdown)
        await send({"type": "lifespan.shutdown.complete"})

    return app


def db(events: list[tuple[str, float]]) -> Callable[..., Awaitable[None]]:
    async def service(token: ShutdownToken, *, task_status: TaskStatus[None]) -> None:
        task_status.started()
        try:
            await anyio.sleep_forever()
        finally:
            events.append(("db closed", anyio.current_time()))

    return service


@pytest.mark.anyio
async def test_the_startup_is_cancelled_when_the_shutdown_begins(
    mock_clock: MockClock,
) -> None:
    events: list[tuple[str, float]] = []
    caught: list[ServiceNotStartedError] = []

    async def stop_later(token: ShutdownToken) -> None:
        await anyio.sleep(3)
        scope.request_shutdown("deploy")

    async with graceful_scope(
        announce_delay=2, drain_timeout=10, cancel_timeout=5, **NO_SIGNALS
    ) as scope:
        t0 = anyio.current_time()
        await scope.start(db(events), name="db")
        scope.start_soon(stop_later)
        try:
            await scope.start(serve, lifespan_app(1000, 0, events), config())
        except ServiceNotStartedError as error:
            caught.append(error)
    assert [error.by_shutdown for error in caught] == [True]
    # At the trigger, not after the announce delay or the drain: a server
    # still starting will never serve.
    assert events == [("startup cancelled", t0 + 3), ("db closed", t0 + 5)]
    assert scope.report.exit_code == 1
    http = next(s for s in scope.report.services if s.name == "serve")
    assert http.outcome == "not started"
    assert http.stopped_while_starting


@pytest.mark.anyio
async def test_a_hung_lifespan_shutdown_gets_half_of_the_cleanup_window(
    mock_clock: MockClock,
) -> None:
    events: list[tuple[str, float]] = []
    async with graceful_scope(
        drain_timeout=1, cancel_timeout=10, **NO_SIGNALS
    ) as scope:
        await scope.start(db(events), name="db")
        await scope.start(serve, lifespan_app(0, 1000, events), config())
        t0 = anyio.current_time()
        scope.request_shutdown("test over")
    # Drained to the deadline (t0 + 1), then half of the 10 s cancel window:
    # the db, started earlier, is stopped with the other half left.
    assert events[1:] == [("shutdown cancelled", t0 + 6), ("db closed", t0 + 6)]
    (_, http) = scope.report.services
    assert http.outcome == "cancelled"
    assert "serve: lifespan shutdown" in http.cancelled_in_flight
