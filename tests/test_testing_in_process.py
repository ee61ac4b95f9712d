"""shutdown_scope.testing in process: graceful_test_scope, drive_to, virtual time.

Every test here runs on virtual time on both backends: trio's MockClock, and
VirtualClockLoop for asyncio (this module's ``anyio_backend`` fixture).
"""

from __future__ import annotations

import asyncio
import signal
import socket
import threading

import anyio
import pytest
from anyio.abc import TaskStatus

from shutdown_scope import Phase, ShutdownToken
from shutdown_scope.testing import (
    VirtualClockLoop,
    drive_to,
    graceful_test_scope,
    virtual_clock_backend,
)

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, object]]:
    return virtual_clock_backend(request.param)


async def holds_work(token: ShutdownToken, *, task_status: TaskStatus[None]) -> None:
    """A service with a job in flight until it is cancelled."""
    with token.in_flight("job"):
        task_status.started()
        await anyio.sleep_forever()


async def test_virtual_time_jumps_to_the_next_timer() -> None:
    t0 = anyio.current_time()
    await anyio.sleep(100)
    assert anyio.current_time() == t0 + 100
    with anyio.move_on_after(5) as waited:
        await anyio.sleep_forever()
    assert waited.cancelled_caught
    assert anyio.current_time() == t0 + 105


async def test_ready_io_is_served_before_the_clock_jumps() -> None:
    """A timer far ahead does not fire while there is I/O to read."""
    left, right = socket.socketpair()
    with left, right:
        left.setblocking(False)
        right.send(b"ping")
        t0 = anyio.current_time()
        with anyio.fail_after(60):
            await anyio.wait_readable(left)
        assert left.recv(4) == b"ping"
        assert anyio.current_time() == t0


async def test_drive_to_each_phase_on_virtual_time() -> None:
    seen: list[tuple[Phase, Phase, float]] = []
    async with graceful_test_scope(
        announce_delay=5, drain_timeout=10, cancel_timeout=3
    ) as scope:
        await scope.start(holds_work, name="worker")
        await anyio.sleep(100)
        t0 = anyio.current_time()
        assert await drive_to(scope, Phase.RUNNING) == Phase.RUNNING
        assert not scope.token.stop_requested
        for phase in (Phase.STOPPING, Phase.DRAINING, Phase.CANCELLING):
            reached = await drive_to(scope, phase)
            seen.append((phase, reached, anyio.current_time() - t0))
    assert seen == [
        (Phase.STOPPING, Phase.STOPPING, 0),
        (Phase.DRAINING, Phase.DRAINING, 5),
        (Phase.CANCELLING, Phase.CANCELLING, 15),
    ]
    report = scope.report
    assert report.reason == "drive_to"
    assert report.cancelled_in_flight == ("worker: job",)


async def test_drive_to_a_phase_already_passed_returns_the_later_one() -> None:
    async with graceful_test_scope(drain_timeout=10) as scope:
        await scope.start(holds_work)
        assert await drive_to(scope, Phase.DRAINING, reason="deploy") == Phase.DRAINING
        t0 = anyio.current_time()
        assert await drive_to(scope, Phase.STOPPING) == Phase.DRAINING
        assert anyio.current_time() == t0
        assert scope.token.reason == "deploy"  # the first reason stays


async def test_drive_to_refuses_phases_it_cannot_reach() -> None:
    async with graceful_test_scope() as scope:
        for phase in (Phase.EXITING, Phase.DONE):
            with pytest.raises(ValueError, match="up to CANCELLING"):
                await drive_to(scope, phase)
        scope.request_shutdown()
    with pytest.raises(RuntimeError, match="has exited"):
        await drive_to(scope, Phase.DRAINING)


async def test_a_test_scope_leaves_signals_threads_and_systemd_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    threads = set(threading.enumerate())
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind(f"\0shutdown-scope-test-{id(manager)}")
        monkeypatch.setenv("NOTIFY_SOCKET", f"@shutdown-scope-test-{id(manager)}")
        manager.setblocking(False)
        async with graceful_test_scope(drain_timeout=1) as scope:
            await scope.start(holds_work)
            inside = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
            new_threads = set(threading.enumerate()) - threads
            await drive_to(scope, Phase.CANCELLING)
        with pytest.raises(BlockingIOError):
            manager.recv(4096)
    assert inside == before
    assert new_threads == set()  # no watchdog that could os._exit the test run


def test_virtual_clock_backend_refuses_other_names() -> None:
    with pytest.raises(ValueError, match="'asyncio' or 'trio'"):
        virtual_clock_backend("curio")  # type: ignore[arg-type]


def test_the_asyncio_loop_runs_plain_asyncio_on_virtual_time() -> None:
    async def main() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await asyncio.sleep(3600)
        return t0, loop.time()

    loop = VirtualClockLoop()
    try:
        assert loop.run_until_complete(main()) == (0, 3600)
    finally:
        loop.close()
