"""ShutdownToken: in-flight tracking, children, waiting, and its properties."""

from __future__ import annotations

import math

import anyio
import pytest
from anyio.abc import TaskStatus
from trio.testing import MockClock

from shutdown_scope import Phase, ShutdownToken, graceful_scope

pytestmark = pytest.mark.anyio


async def test_in_flight_counts_labels_and_children() -> None:
    async with graceful_scope(signals=(), hard_exit=False) as scope:
        token = scope.token
        assert (token.name, token.phase, token.ready) == ("body", Phase.RUNNING, True)
        assert not token.stop_requested
        assert token.reason is None
        child = token.child("http")
        grandchild = child.child("ws")
        assert grandchild.name == "body/http/ws"
        with child.in_flight("GET /a"), child.in_flight("GET /a"):
            with grandchild.in_flight("chat"):
                assert token.in_flight_count == 3
                assert child.in_flight_count == 3
                assert grandchild.in_flight_count == 1
                assert token.in_flight_labels() == (
                    "http/GET /a",
                    "http/GET /a",
                    "http/ws/chat",
                )
                assert "in_flight=3" in repr(token)
            assert grandchild.in_flight_labels() == ()
        assert token.in_flight_count == 0
        assert child.phase is token.phase  # a child shares its parent's phase
        scope.request_shutdown("done")
        await child.wait_phase(Phase.STOPPING)
        assert child.stop_requested
        assert child.reason == "done"
        assert not child.ready


async def test_in_flight_is_released_when_the_work_raises() -> None:
    async with graceful_scope(signals=(), hard_exit=False) as scope:
        with pytest.raises(ZeroDivisionError), scope.token.in_flight("math"):
            _ = 1 / 0
        assert scope.token.in_flight_count == 0


async def test_child_needs_a_name() -> None:
    async with graceful_scope(signals=(), hard_exit=False) as scope:
        with pytest.raises(ValueError, match="non-empty name"):
            scope.token.child("")


async def test_wait_phase_returns_at_once_when_reached() -> None:
    async with graceful_scope(signals=(), hard_exit=False) as scope:
        await scope.token.wait_phase(Phase.RUNNING)
        scope.request_shutdown()
        await scope.token.wait_phase(Phase.STOPPING)
        await scope.token.wait_phase(Phase.STOPPING)


async def test_many_waiters_on_one_phase(mock_clock: MockClock) -> None:
    woke: list[tuple[str, float]] = []

    async def waiter(token: ShutdownToken, name: str) -> None:
        await token.wait_phase(Phase.DRAINING)
        woke.append((name, anyio.current_time()))

    async def svc(token: ShutdownToken, *, task_status: TaskStatus[None]) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter, token, "a")
            tg.start_soon(waiter, token.child("c"), "b")
            task_status.started()
            with token.in_flight("hold"):
                await token.wait_phase(Phase.DRAINING)
                await anyio.sleep(1)

    async with graceful_scope(announce_delay=4, signals=(), hard_exit=False) as scope:
        await scope.start(svc)
        scope.request_shutdown()
    assert sorted(woke) == [("a", 4), ("b", 4)]


async def test_deadline_follows_the_phases(mock_clock: MockClock) -> None:
    seen: list[float] = []

    async def svc(token: ShutdownToken, *, task_status: TaskStatus[None]) -> None:
        task_status.started()
        seen.append(token.deadline)
        with token.in_flight("x"):
            await token.wait_phase(Phase.STOPPING)
            seen.append(token.deadline)
            await token.wait_phase(Phase.CANCELLING)
            seen.append(token.deadline)
            await anyio.sleep_forever()

    async with graceful_scope(
        announce_delay=1, drain_timeout=2, cancel_timeout=3, signals=(), hard_exit=False
    ) as scope:
        await scope.start(svc)
        await anyio.sleep(10)
        scope.request_shutdown()
    assert seen == [math.inf, 13, 16]


async def test_children_are_not_kept_once_dropped() -> None:
    """A child per connection must not grow the parent forever; one that still
    has work in flight is kept, and its labels still count."""
    import gc

    async with graceful_scope(signals=(), hard_exit=False) as scope:
        for n in range(1000):
            scope.token.child(f"conn-{n}")
        busy = scope.token.child("busy").in_flight("request")
        with busy:
            gc.collect()
            assert len(scope.token._node.children) == 1
            assert scope.token.in_flight_labels() == ("busy/request",)
        scope.request_shutdown()
