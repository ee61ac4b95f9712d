"""graceful_scope: ordering, phases on virtual time, triggers, failures."""

from __future__ import annotations

import functools
import math
import sys

import anyio
import pytest
from _services import NO_SIGNALS, idle, stubborn
from anyio.abc import TaskStatus
from trio.testing import MockClock

from shutdown_scope import (
    Phase,
    ServiceNotStartedError,
    ShutdownToken,
    graceful_scope,
)

if sys.version_info < (3, 11):
    from exceptiongroup import ExceptionGroup

pytestmark = pytest.mark.anyio


async def test_start_returns_the_started_value() -> None:
    async def svc(
        token: ShutdownToken, greeting: str, *, task_status: TaskStatus[str]
    ) -> None:
        task_status.started(f"{greeting} from {token.name}")
        await anyio.sleep_forever()

    async with graceful_scope(**NO_SIGNALS) as scope:
        assert await scope.start(svc, "hello", name="greeter") == "hello from greeter"
        scope.request_shutdown("test over")
    assert scope.report.clean
    assert [s.name for s in scope.report.services] == ["greeter"]
    assert scope.report.services[0].outcome == "stopped"


async def test_services_stop_in_reverse_start_order() -> None:
    seen: list[str] = []

    async def dependency(
        token: ShutdownToken, name: str, *, task_status: TaskStatus[None]
    ) -> None:
        task_status.started()
        try:
            await anyio.sleep_forever()
        finally:
            seen.append(f"{name} closes")

    async def server(token: ShutdownToken, *, task_status: TaskStatus[None]) -> None:
        task_status.started()
        with token.in_flight("request"):
            await token.wait_phase(Phase.DRAINING)
            for _ in range(3):
                # the dependencies are untouched while the server drains
                seen.append(f"server drains; db sees {db_token.phase}")
                await anyio.sleep(0.01)
        seen.append("server done")

    db_token: ShutdownToken

    async def db(token: ShutdownToken, *, task_status: TaskStatus[None]) -> None:
        nonlocal db_token
        db_token = token
        await dependency(token, "db", task_status=task_status)

    async with graceful_scope(**NO_SIGNALS) as scope:
        await scope.start(db)
        await scope.start(dependency, "cache", name="cache")
        await scope.start(server)
        scope.request_shutdown()
    assert seen == [
        "server drains; db sees RUNNING",
        "server drains; db sees RUNNING",
        "server drains; db sees RUNNING",
        "server done",
        "cache closes",
        "db closes",
    ]
    assert [s.outcome for s in scope.report.services] == [
        "stopped",
        "stopped",
        "returned",
    ]
    assert scope.report.clean


async def test_phase_timeline_on_virtual_time(mock_clock: MockClock) -> None:
    tokens: list[tuple[float, Phase, float]] = []

    async def slow(token: ShutdownToken, *, task_status: TaskStatus[None]) -> None:
        task_status.started()
        with token.in_flight("slow job"):
            for phase in (Phase.STOPPING, Phase.DRAINING, Phase.CANCELLING):
                await token.wait_phase(phase)
                tokens.append((anyio.current_time(), token.phase, token.deadline))
            await anyio.sleep_forever()

    async with graceful_scope(
        announce_delay=5, drain_timeout=10, cancel_timeout=3, **NO_SIGNALS
    ) as scope:
        await scope.start(slow)
        assert scope.token.deadline == math.inf
        await anyio.sleep(100)
        scope.request_shutdown("deploy")
        assert not scope.token.ready
    report = scope.report
    # t0 = 100: STOPPING until 105, DRAINING until 115, then cancelled
    assert tokens == [
        (100, Phase.STOPPING, 115),
        (105, Phase.DRAINING, 115),
        (115, Phase.CANCELLING, 118),
    ]
    assert [(r.phase, r.started, r.duration) for r in report.phases] == [
        (Phase.STOPPING, 0, 5),
        (Phase.DRAINING, 5, 10),
        (Phase.CANCELLING, 15, 0),
    ]
    assert report.phases[2].in_flight == ("slow: slow job",)
    assert report.cancelled_in_flight == ("slow: slow job",)
    assert report.services[0].outcome == "cancelled"
    assert (report.trigger, report.reason) == ("request", "deploy")
    assert report.duration == 15
    assert not report.clean
    assert report.exit_code == 1


async def test_drain_ends_the_moment_nothing_is_in_flight(
    mock_clock: MockClock,
) -> None:
    async def worker(token: ShutdownToken, *, task_status: TaskStatus[None]) -> None:
        task_status.started()
        with token.in_flight("job"):
            await anyio.sleep(3)
        await anyio.sleep_forever()  # does not watch its token: stopped when idle

    async with graceful_scope(
        announce_delay=1, drain_timeout=20, **NO_SIGNALS
    ) as scope:
        await scope.start(worker)
        scope.request_shutdown()
    report = scope.report
    assert [(r.phase, r.started, r.duration) for r in report.phases] == [
        (Phase.STOPPING, 0, 1),
        (Phase.DRAINING, 1, 2),
    ]
    assert report.services[0].outcome == "stopped"
    assert report.services[0].finished_at == 3
    assert report.clean


async def test_ordering_fits_one_drain_budget(mock_clock: MockClock) -> None:
    """A later service uses the drain; an earlier one gets what is left of it."""
    stopped_at: dict[str, float] = {}

    async def busy(
        token: ShutdownToken, seconds: float, *, task_status: TaskStatus[None]
    ) -> None:
        task_status.started()
        await token.wait_phase(Phase.STOPPING)
        stopped_at[token.name] = anyio.current_time()
        with token.in_flight("work"):
            await anyio.sleep(seconds)

    async with graceful_scope(
        drain_timeout=10, cancel_timeout=2, **NO_SIGNALS
    ) as scope:
        await scope.start(busy, 8, name="first")
        await scope.start(busy, 6, name="second")
        scope.request_shutdown()
    report = scope.report
    assert stopped_at == {"second": 0, "first": 6}
    # Each phase once, however many services drain in it.
    assert [(r.phase, r.started) for r in report.phases] == [
        (Phase.STOPPING, 0),
        (Phase.DRAINING, 0),
        (Phase.CANCELLING, 10),
    ]
    first, second = report.services
    assert (second.outcome, second.finished_at) == ("returned", 6)
    # first needed 8 s but only 4 were left of the drain: cancelled at 10
    assert (first.outcome, first.finished_at) == ("cancelled", 10)
    assert first.cancelled_in_flight == ("first: work",)


async def test_ignoring_cancellation_is_reported_as_abandoned(
    mock_clock: MockClock,
) -> None:
    async def stubborn(token: ShutdownToken, *, task_status: TaskStatus[None]) -> None:
        task_status.started()
        with token.in_flight("stuck"), anyio.CancelScope(shield=True):
            await anyio.sleep(50)

    async with graceful_scope(
        drain_timeout=10, cancel_timeout=2, **NO_SIGNALS
    ) as scope:
        await scope.start(stubborn)
        scope.request_shutdown()
    report = scope.report
    assert [(r.phase, r.started) for r in report.phases] == [
        (Phase.STOPPING, 0),
        (Phase.DRAINING, 0),
        (Phase.CANCELLING, 10),
        (Phase.EXITING, 12),
    ]
    assert report.services[0].outcome == "abandoned"
    assert report.services[0].finished_at == 50
    assert report.exit_code == 1


async def test_an_abandoned_service_with_nothing_in_flight_is_not_clean(
    mock_clock: MockClock,
) -> None:
    """No work was lost, but a service ignored cancellation past the budget."""
    async with graceful_scope(
        drain_timeout=10, cancel_timeout=2, **NO_SIGNALS
    ) as scope:
        await scope.start(stubborn)
        scope.request_shutdown()
    report = scope.report
    assert report.cancelled_in_flight == ()
    assert report.errors == ()
    (record,) = report.services
    assert (record.outcome, record.finished_at) == ("abandoned", 50)
    assert report.phase(Phase.EXITING) is not None
    assert not report.clean
    assert report.exit_code == 1
    assert report.as_dict()["clean"] is False


async def test_past_the_deadline_the_other_services_are_still_waited_for(
    mock_clock: MockClock,
) -> None:
    """With hard_exit=False, once one service is abandoned the budget is gone:
    the services stopped after it are cancelled and waited for, and they are
    not called abandoned for a cleanup that ends."""

    async def slow_cleanup(
        token: ShutdownToken, *, task_status: TaskStatus[None]
    ) -> None:
        task_status.started()
        try:
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.sleep(1)

    async with graceful_scope(
        drain_timeout=10, cancel_timeout=2, **NO_SIGNALS
    ) as scope:
        await scope.start(slow_cleanup)
        await scope.start(stubborn)  # stopped first
        scope.request_shutdown()
    outcomes = [(s.name, s.outcome, s.finished_at) for s in scope.report.services]
    assert outcomes == [
        ("slow_cleanup", "stopped", 51),
        ("stubborn", "abandoned", 50),
    ]


async def test_a_body_that_returns_during_its_drain_is_reported(
    mock_clock: MockClock,
) -> None:
    async with graceful_scope(announce_delay=2, **NO_SIGNALS) as scope:
        with scope.token.in_flight("body work"):
            scope.request_shutdown()
            await scope.token.wait_phase(Phase.DRAINING)
            await anyio.sleep(1)
    body = scope.report.services[-1]
    assert (body.name, body.outcome) == ("body", "returned")
    assert (body.stop_requested_at, body.finished_at) == (0, 3)
    assert scope.report.clean


async def test_shield_cleanup_is_bounded_by_the_budget(mock_clock: MockClock) -> None:
    cleanup: list[float] = []

    async def svc(token: ShutdownToken, *, task_status: TaskStatus[None]) -> None:
        task_status.started()
        try:
            with token.in_flight("request"):
                await anyio.sleep_forever()
        finally:
            with token.shield_cleanup():
                await anyio.sleep(100)  # a cleanup that would take too long
            cleanup.append(anyio.current_time())

    async with graceful_scope(drain_timeout=4, cancel_timeout=3, **NO_SIGNALS) as scope:
        await scope.start(svc)
        scope.request_shutdown()
    assert cleanup == [7]
    assert scope.report.services[0].outcome == "cancelled"


async def test_cancel_on_fires_when_the_phase_is_reached(mock_clock: MockClock) -> None:
    fired: list[tuple[float, bool]] = []

    async def svc(token: ShutdownToken, *, task_status: TaskStatus[None]) -> None:
        task_status.started()
        with token.cancel_on(Phase.DRAINING) as cs:
            await anyio.sleep_forever()
        fired.append((anyio.current_time(), cs.cancelled_caught))
        with token.cancel_on(Phase.STOPPING) as late:  # already reached: at once
            await anyio.sleep(1)
        fired.append((anyio.current_time(), late.cancelled_caught))

    async with graceful_scope(announce_delay=2, **NO_SIGNALS) as scope:
        await scope.start(svc)
        scope.request_shutdown()
    assert fired == [(2, True), (2, True)]
    assert scope.report.services[0].outcome == "returned"


async def test_a_failing_service_stops_the_others_gracefully() -> None:
    order: list[str] = []

    async def pool(token: ShutdownToken, *, task_status: TaskStatus[None]) -> None:
        task_status.started()
        try:
            await anyio.sleep_forever()
        finally:
            order.append("pool closed")

    async def broken(token: ShutdownToken, *, task_status: TaskStatus[None]) -> None:
        task_status.started()
        await anyio.sleep(0.01)
        order.append("broken raises")
        raise ValueError("bad message")

    with pytest.raises(ExceptionGroup) as caught:
        async with graceful_scope(**NO_SIGNALS) as scope:
            await scope.start(pool)
            await scope.start(broken)
    assert caught.group_contains(ValueError, match="bad message")
    assert order == ["broken raises", "pool closed"]
    report = scope.report
    assert report.trigger == "error"
    assert "broken" in report.reason
    assert [s.outcome for s in report.services] == ["stopped", "failed"]
    assert report.exit_code == 1
    assert "ValueError" in str(report.as_dict()["errors"])


async def test_an_error_during_cleanup_is_reported() -> None:
    async def messy(token: ShutdownToken, *, task_status: TaskStatus[None]) -> None:
        task_status.started()
        try:
            await anyio.sleep_forever()
        finally:
            raise OSError("close failed")

    with pytest.raises(ExceptionGroup) as caught:
        async with graceful_scope(**NO_SIGNALS) as scope:
            await scope.start(messy)
            scope.request_shutdown()
    assert caught.group_contains(OSError, match="close failed")
    assert scope.report.services[0].outcome == "failed"


async def test_an_error_before_started_is_raised_by_start() -> None:
    async def cannot_bind(
        token: ShutdownToken, *, task_status: TaskStatus[None]
    ) -> None:
        raise OSError("address in use")

    async with graceful_scope(**NO_SIGNALS) as scope:
        await scope.start(idle)
        with pytest.raises(OSError, match="address in use"):
            await scope.start(cannot_bind)
        scope.request_shutdown()
    assert scope.report.clean  # the caller handled it


async def test_a_failing_body_stops_the_services_then_raises() -> None:
    with pytest.raises(ExceptionGroup) as caught:
        async with graceful_scope(**NO_SIGNALS) as scope:
            await scope.start(idle)
            raise KeyError("config")
    assert caught.group_contains(KeyError)
    assert scope.report.trigger == "error"
    assert scope.report.services[0].outcome == "stopped"


async def test_a_service_that_returns_without_started() -> None:
    async def forgetful(token: ShutdownToken, *, task_status: TaskStatus[None]) -> None:
        return

    with pytest.raises(ExceptionGroup) as caught:
        async with graceful_scope(**NO_SIGNALS) as scope:
            await scope.start(forgetful)
    assert caught.group_contains(ServiceNotStartedError, match="without calling")
    err = caught.value.exceptions[0]
    assert isinstance(err, RuntimeError)
    assert isinstance(err, ServiceNotStartedError)
    assert not err.by_shutdown


async def test_a_shutdown_during_start_stops_the_starting_service(
    mock_clock: MockClock,
) -> None:
    async def slow_start(
        token: ShutdownToken, *, task_status: TaskStatus[None]
    ) -> None:
        await anyio.sleep(1000)
        task_status.started()  # pragma: no cover -- never reached

    async def trigger_later(token: ShutdownToken) -> None:
        await anyio.sleep(1)
        scope.request_shutdown("deploy during startup")

    after_start: list[str] = []
    async with graceful_scope(**NO_SIGNALS) as scope:
        scope.start_soon(trigger_later)
        await scope.start(slow_start)
        after_start.append("unreachable")  # pragma: no cover
    assert after_start == []
    # A normal stop (no error raised), but its start was cut short: not clean.
    assert scope.report.exit_code == 1
    assert scope.report.errors == ()
    # (whether the body is listed depends on whether it had returned by its turn)
    assert [(s.name, s.outcome) for s in scope.report.services][:2] == [
        ("trigger_later", "returned"),
        ("slow_start", "not started"),
    ]
    assert scope.report.services[1].stopped_while_starting
    assert scope.report.duration == 0


async def test_start_after_the_shutdown_began_is_refused() -> None:
    async with graceful_scope(**NO_SIGNALS) as scope:
        scope.request_shutdown("going away")
        with pytest.raises(RuntimeError, match=r"shutdown has begun \(going away\)"):
            await scope.start(idle)
        with pytest.raises(RuntimeError, match="shutdown has begun"):
            scope.start_soon(idle)
    with pytest.raises(RuntimeError, match="not running"):
        scope.start_soon(idle)


async def test_bad_service_arguments() -> None:
    async with graceful_scope(**NO_SIGNALS) as scope:
        with pytest.raises(TypeError, match="async function"):
            scope.start_soon(42)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="name must be a str"):
            scope.start_soon(idle, name=7)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="reason must be a str"):
            scope.request_shutdown(3)  # type: ignore[arg-type]
        with pytest.raises(RuntimeError, match="exists once"):
            _ = scope.report
        scope.request_shutdown()


async def test_started_twice_is_an_error() -> None:
    async def twice(token: ShutdownToken, *, task_status: TaskStatus[None]) -> None:
        task_status.started()
        task_status.started()

    with pytest.raises(ExceptionGroup) as caught:
        async with graceful_scope(**NO_SIGNALS) as scope:
            await scope.start(twice)
    assert caught.group_contains(RuntimeError, match="twice")


async def test_duplicate_names_are_made_unique() -> None:
    async with graceful_scope(**NO_SIGNALS) as scope:
        for _ in range(3):
            scope.start_soon(idle, name="worker")
        scope.request_shutdown()
    assert [s.name for s in scope.report.services] == ["worker", "worker#2", "worker#3"]


async def test_a_partial_is_named_after_its_function() -> None:
    async with graceful_scope(**NO_SIGNALS) as scope:
        scope.start_soon(functools.partial(functools.partial(idle)))
        scope.request_shutdown()
    assert [s.name for s in scope.report.services] == ["idle"]


async def test_the_scope_ends_when_everything_returned() -> None:
    async def batch(token: ShutdownToken) -> None:
        with token.in_flight("batch"):
            await anyio.sleep(0.01)

    async with graceful_scope(**NO_SIGNALS) as scope:
        scope.start_soon(batch)
    report = scope.report
    assert report.trigger == "finished"
    assert report.phases == ()
    assert report.clean
    assert scope.phase == Phase.DONE


async def test_an_empty_scope_ends_at_once() -> None:
    async with graceful_scope(**NO_SIGNALS) as scope:
        pass
    assert scope.report.trigger == "finished"


async def test_a_running_body_is_stopped_last(mock_clock: MockClock) -> None:
    events: list[tuple[float, str]] = []

    async def svc(token: ShutdownToken, *, task_status: TaskStatus[None]) -> None:
        task_status.started()
        try:
            await anyio.sleep_forever()
        finally:
            events.append((anyio.current_time(), "service stopped"))

    async def trigger(token: ShutdownToken) -> None:
        await anyio.sleep(1)
        scope.request_shutdown()

    async with graceful_scope(announce_delay=2, **NO_SIGNALS) as scope:
        await scope.start(svc)
        scope.start_soon(trigger)
        try:
            with scope.token.in_flight("body work"):
                await scope.token.wait_phase(Phase.STOPPING)
                events.append((anyio.current_time(), f"body sees {scope.token.phase}"))
                await anyio.sleep(5)
            await anyio.sleep_forever()
        finally:
            events.append((anyio.current_time(), "body stopped"))
    assert events == [
        (1, "body sees STOPPING"),
        (3, "service stopped"),
        (6, "body stopped"),
    ]
    body = scope.report.services[-1]
    assert (body.name, body.outcome) == ("body", "stopped")


async def test_request_shutdown_from_another_thread() -> None:
    async with graceful_scope(**NO_SIGNALS) as scope:
        await scope.start(idle)
        await anyio.to_thread.run_sync(scope.request_shutdown, "from a thread")
        await scope.token.wait_phase(Phase.STOPPING)
        assert scope.token.reason == "from a thread"
    assert scope.report.reason == "from a thread"
    # idempotent, and harmless once the scope is over, from any thread
    scope.request_shutdown("again")
    await anyio.to_thread.run_sync(scope.request_shutdown, "again")
    assert scope.report.reason == "from a thread"


async def test_report_is_readable_and_json_safe() -> None:
    import json

    async def svc(token: ShutdownToken, *, task_status: TaskStatus[None]) -> None:
        task_status.started()
        with token.in_flight("GET /slow"), token.in_flight("GET /slow"):
            await anyio.sleep_forever()

    async with graceful_scope(drain_timeout=0, cancel_timeout=1, **NO_SIGNALS) as scope:
        await scope.start(svc, name="http")
        scope.request_shutdown("deploy")
    text = str(scope.report)
    assert "NOT clean" in text
    assert "http: GET /slow x2" in text
    assert "CANCELLING" in text
    data = json.loads(json.dumps(scope.report.as_dict()))
    assert data["exit_code"] == 1
    assert data["services"][0]["cancelled_in_flight"] == ["http: GET /slow"] * 2
    assert [p["phase"] for p in data["phases"]] == [
        "STOPPING",
        "DRAINING",
        "CANCELLING",
    ]
    assert scope.report.phase(Phase.DRAINING) is not None
    assert scope.report.phase(Phase.EXITING) is None
