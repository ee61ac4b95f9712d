"""ShutdownToken: in-flight tracking, children, waiting, and its properties."""

from __future__ import annotations

import math
import sys
import threading

import anyio
import pytest
from _services import NO_SIGNALS, late_cleanup
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


async def test_wait_phase_returns_at_once_when_reached(mock_clock: MockClock) -> None:
    """A phase reached (or passed) returns without waiting for the next one, and
    is still a checkpoint."""
    async with graceful_scope(announce_delay=5, signals=(), hard_exit=False) as scope:
        token = scope.token
        t0 = anyio.current_time()
        with anyio.fail_after(1):  # virtual: a wait for a later phase jumps here
            await token.wait_phase(Phase.RUNNING)
            assert anyio.current_time() == t0
            scope.request_shutdown()
            await token.wait_phase(Phase.STOPPING)  # DRAINING is 5 s away
            await token.wait_phase(Phase.RUNNING)
            assert anyio.current_time() == t0
        assert token.phase == Phase.STOPPING
        for phase in (Phase.RUNNING, Phase.STOPPING):
            with anyio.CancelScope() as cancelled:
                cancelled.cancel()
                await token.wait_phase(phase)
            assert cancelled.cancelled_caught, phase


async def test_cancel_on_the_current_phase_cancels_at_once(
    mock_clock: MockClock,
) -> None:
    """Entered in exactly the phase it names (not only a later one), the scope
    is cancelled at once: its first checkpoint raises."""
    seen: list[tuple[Phase, float, bool]] = []

    async def svc(token: ShutdownToken, *, task_status: TaskStatus[None]) -> None:
        task_status.started()
        with token.cancel_on(Phase.RUNNING) as running:
            await anyio.sleep(1)
        seen.append((Phase.RUNNING, anyio.current_time(), running.cancelled_caught))
        await token.wait_phase(Phase.STOPPING)
        with token.cancel_on(Phase.STOPPING) as stopping:  # DRAINING is 5 s away
            await anyio.sleep(1)
        seen.append((Phase.STOPPING, anyio.current_time(), stopping.cancelled_caught))

    async with graceful_scope(announce_delay=5, signals=(), hard_exit=False) as scope:
        await scope.start(svc)
        await anyio.sleep(10)
        scope.request_shutdown()
    assert seen == [(Phase.RUNNING, 0, True), (Phase.STOPPING, 10, True)]
    assert scope.report.services[0].outcome == "returned"


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


async def test_shield_cleanup_allows_cancel_timeout_from_now(
    mock_clock: MockClock,
) -> None:
    """Before the final deadline is near, a cleanup gets ``cancel_timeout`` from
    the moment it starts: also while running, when there is no final deadline."""
    bounds: list[tuple[float, float]] = []

    async def svc(token: ShutdownToken, *, task_status: TaskStatus[None]) -> None:
        task_status.started()
        with token.shield_cleanup() as early:
            await anyio.sleep(100)
        bounds.append((anyio.current_time(), early.deadline))
        await token.wait_phase(Phase.STOPPING)
        with token.shield_cleanup() as on_stop:
            await anyio.sleep(100)
        bounds.append((anyio.current_time(), on_stop.deadline))

    async with graceful_scope(
        drain_timeout=20, cancel_timeout=3, signals=(), hard_exit=False
    ) as scope:
        await scope.start(svc)
        await anyio.sleep(10)
        scope.request_shutdown()
    assert bounds == [(3, 3), (13, 13)]  # the final deadline is 33
    assert scope.report.clean


async def test_shield_cleanup_started_late_ends_at_the_final_deadline(
    mock_clock: MockClock,
) -> None:
    """A cleanup started in CANCELLING, one second before the end of the budget,
    gets that second, not a fresh ``cancel_timeout``."""
    cleanup: list[tuple[float, float]] = []
    svc = late_cleanup(cleanup, first_step=2)  # a first cleanup step: from 4 to 6

    async with graceful_scope(
        drain_timeout=4, cancel_timeout=3, signals=(), hard_exit=False
    ) as scope:
        await scope.start(svc)
        scope.request_shutdown()
    assert cleanup == [(7, 7)]
    (record,) = scope.report.services
    assert (record.outcome, record.finished_at) == ("cancelled", 7)
    assert scope.report.phase(Phase.EXITING) is None


async def test_an_in_flight_guard_is_reusable_one_unit_at_a_time() -> None:
    async with graceful_scope(signals=(), hard_exit=False) as scope:
        token = scope.token
        guard = token.in_flight("job")
        for _ in range(2):  # one after the other: each time a unit of work
            with guard:
                assert token.in_flight_labels() == ("job",)
            assert token.in_flight_count == 0
        # Entered twice at once, the labels and the count would disagree.
        with guard, pytest.raises(RuntimeError, match="already entered"), guard:
            pass  # pragma: no cover -- the second enter raises
        assert (token.in_flight_count, token.in_flight_labels()) == (0, ())


async def test_counts_read_from_another_thread_while_children_come_and_go() -> None:
    # A metrics exporter scrapes from its own thread (prometheus.py): the sum
    # over child nodes must not trip over a child made or dropped meanwhile.
    errors: list[BaseException] = []
    done = threading.Event()

    async with graceful_scope(signals=(), hard_exit=False) as scope:

        def scrape() -> None:
            try:
                while not done.is_set():
                    scope.in_flight_by_service()
                    scope.token.in_flight_labels()
            except Exception as error:  # noqa: BLE001 -- reported below
                errors.append(error)

        scraper = threading.Thread(target=scrape)
        switch = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)  # switch threads mid-sum, often
        scraper.start()
        try:
            kept: list[ShutdownToken] = []
            for i in range(30_000):
                child = scope.token.child(f"c{i}")
                with child.in_flight("GET /"):
                    kept.append(child)
                if len(kept) == 300:
                    kept.clear()  # dropped: their nodes go from the parent's set
                if errors:
                    break
        finally:
            done.set()
            scraper.join()
            sys.setswitchinterval(switch)
    assert errors == []


async def test_a_failing_shutdown_begins_hook_does_not_stop_the_shutdown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The hooks servers register (e.g. hypercorn's Connection: close from the
    # trigger on) run inside the trigger: one that raises must not leave the
    # shutdown half begun.
    called: list[str] = []

    def broken() -> None:
        called.append("broken")
        raise OverflowError("cannot convert float infinity to integer")

    async with graceful_scope(**NO_SIGNALS) as scope:
        view = scope.token._view  # the package's own
        view.on_trigger(broken)
        view.on_trigger(lambda: called.append("next"))
        scope.request_shutdown("test")
    assert called == ["broken", "next"]
    assert scope.report is not None
    assert scope.report.exit_code == 0
    assert [r.event for r in caplog.records if hasattr(r, "event")].count(
        "trigger_hook_failed"
    ) == 1
