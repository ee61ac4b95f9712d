"""Edge cases of the phase machine, signals and the watchdog.

Part 1 holds regression tests for bugs a review found; part 2 covers failure
paths the other test files do not.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from typing import Any

import anyio
import pytest
from _services import NO_SIGNALS, ON_SIGUSR1, idle
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


# =============================================================================
# Part 1: regressions of bugs a review found
# =============================================================================


async def test_runtime_error_before_started_reaches_the_caller() -> None:
    """A RuntimeError raised before started() reaches start()'s caller as it is,
    not as ServiceNotStartedError."""

    async def bad(token: ShutdownToken, *, task_status: TaskStatus[None]) -> None:
        raise RuntimeError("no config file")

    async with graceful_scope(**NO_SIGNALS) as scope:
        with pytest.raises(RuntimeError, match="no config file"):
            await scope.start(bad)
        scope.request_shutdown()
    assert scope.report.clean


async def test_service_that_gives_up_its_start_on_stop_is_a_normal_stop(
    mock_clock: MockClock,
) -> None:
    """A starting service that sees its token and returns is stopped by the
    shutdown (by_shutdown=True): a normal stop, not an error; but its start
    was cut short, so the stop is not clean."""

    async def connecting(
        token: ShutdownToken, *, task_status: TaskStatus[None]
    ) -> None:
        with token.cancel_on(Phase.STOPPING):
            await anyio.sleep(1000)  # connecting to a broker
            task_status.started()  # pragma: no cover -- never reached
        # the shutdown came while starting: give up quietly

    async def trigger_later(token: ShutdownToken) -> None:
        await anyio.sleep(1)
        scope.request_shutdown("deploy during startup")

    async with graceful_scope(**NO_SIGNALS) as scope:
        scope.start_soon(trigger_later)
        await scope.start(connecting)
    assert scope.report.errors == ()
    (_, svc, *_) = scope.report.services
    assert (svc.name, svc.outcome) == ("connecting", "not started")
    assert svc.stopped_while_starting
    assert scope.report.exit_code == 1


async def test_two_signals_before_the_phase_machine_runs(
    mock_clock: MockClock,
) -> None:
    """Two signals handled before the phase machine runs: STOPPING is still
    recorded and the cancel window is cancel_timeout, not the whole plan."""

    async def stubborn(token: ShutdownToken, *, task_status: TaskStatus[None]) -> None:
        with token.in_flight("job"):
            task_status.started()
            try:
                await anyio.sleep_forever()
            finally:
                with anyio.CancelScope(shield=True):
                    await anyio.sleep(50)  # ignores cancellation

    async with graceful_scope(
        drain_timeout=10,
        cancel_timeout=2,
        **ON_SIGUSR1,
    ) as scope:
        await scope.start(stubborn)
        signal.raise_signal(signal.SIGUSR1)
        signal.raise_signal(signal.SIGUSR1)
    report = scope.report
    assert report.services[0].outcome == "abandoned"
    assert [(p.phase, p.started) for p in report.phases] == [
        (Phase.STOPPING, 0),
        (Phase.CANCELLING, 0),
        (Phase.EXITING, 2),
    ]


async def test_second_signal_during_cleanup_reaches_the_service(
    mock_clock: MockClock,
) -> None:
    """A second signal while an idle service cleans up reaches that service's
    token (CANCELLING) and shortens its wait to the new cancel deadline."""
    in_cleanup = anyio.Event()
    seen: list[tuple[float, Phase]] = []

    async def svc(token: ShutdownToken, *, task_status: TaskStatus[None]) -> None:
        task_status.started()
        try:
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                in_cleanup.set()
                with token.cancel_on(Phase.CANCELLING):
                    await anyio.sleep(100)  # graceful close; a 2nd Ctrl-C cuts it
                seen.append((anyio.current_time(), token.phase))

    async with graceful_scope(
        drain_timeout=10,
        cancel_timeout=5,
        **ON_SIGUSR1,
    ) as scope:
        await scope.start(svc)
        t0 = anyio.current_time()
        signal.raise_signal(signal.SIGUSR1)
        await in_cleanup.wait()
        signal.raise_signal(signal.SIGUSR1)  # phase is DRAINING: escalates
    assert seen == [(t0, Phase.CANCELLING)]
    assert scope.report.phase(Phase.EXITING) is None


async def test_outer_cancel_after_the_body_returned_is_not_finished() -> None:
    """Cancelling the scope from outside after the body returned is reported
    as cancelled, not as everything having returned."""

    async def forever(token: ShutdownToken) -> None:
        await anyio.sleep_forever()

    with anyio.move_on_after(0.05):
        async with graceful_scope(**NO_SIGNALS) as scope:
            scope.start_soon(forever)
    assert (scope.report.trigger, scope.report.reason) == (
        "cancelled",
        "cancelled from outside the scope",
    )


async def test_phase_is_done_after_outer_cancellation() -> None:
    """After cancellation from outside the scope's phase is DONE."""
    with anyio.move_on_after(0.05):
        async with graceful_scope(**NO_SIGNALS) as scope:
            await scope.start(idle)
            await anyio.sleep_forever()
    assert scope.report.trigger == "cancelled"
    assert scope.phase == Phase.DONE


_SLOW_EXIT_CHILD = """
import logging, sys, time
import anyio
from shutdown_scope import graceful_scope, run

class SlowHandler(logging.Handler):  # e.g. a handler that ships logs remotely
    def emit(self, record):
        if "shutdown clean" in record.getMessage():
            time.sleep(0.6)

log = logging.getLogger("shutdown_scope")
log.setLevel(logging.INFO)
log.addHandler(SlowHandler())

async def main():
    async with graceful_scope(
        signals=(), drain_timeout=0.1, cancel_timeout=0.1
    ) as scope:
        if sys.argv[2] == "request":
            scope.request_shutdown("done")
    print("REPORT", scope.report.trigger, scope.report.exit_code, flush=True)

run(main, backend=sys.argv[1])
"""


@pytest.mark.subprocess
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("how", ["request", "finished"])
def test_watchdog_does_not_fire_after_a_slow_clean_exit(backend: str, how: str) -> None:
    """The watchdog is stopped at DONE, before the report is built and logged:
    a slow log handler after a clean shutdown does not end the process."""
    proc = subprocess.run(
        [sys.executable, "-c", _SLOW_EXIT_CHILD, backend, how],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert "watchdog" not in out, out
    assert proc.returncode == 0, out
    assert f"REPORT {how} 0" in out


def test_watchdog_pipe_is_closed_when_the_thread_cannot_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """If the watchdog thread cannot start, its pipe is closed all the same."""
    import os

    from shutdown_scope import _lifetime, _watchdog

    made: list[_watchdog.Watchdog] = []

    class NoThreadWatchdog(_watchdog.Watchdog):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            made.append(self)

        def start(self) -> None:
            raise RuntimeError("can't start new thread")

    monkeypatch.setattr(_lifetime, "Watchdog", NoThreadWatchdog)

    async def main() -> None:
        async with graceful_scope(signals=(), hard_exit=True):
            pass  # pragma: no cover

    with pytest.raises(RuntimeError, match="can't start new thread"):
        anyio.run(main)
    (wd,) = made
    leaked = []
    for fd in (wd._rfd, wd._wfd):
        try:
            os.fstat(fd)
        except OSError:
            continue
        leaked.append(fd)
        os.close(fd)
    assert leaked == []


# =============================================================================
# Part 2: failure paths covered nowhere else
# =============================================================================


async def test_body_raising_while_a_service_drains(mock_clock: MockClock) -> None:
    """The body fails during the drain of a service: the drain still runs to
    its end, the body is reported failed, and the error is raised at exit."""
    draining = anyio.Event()

    async def worker(token: ShutdownToken, *, task_status: TaskStatus[None]) -> None:
        task_status.started()
        with token.in_flight("job"):
            await token.wait_phase(Phase.DRAINING)
            draining.set()
            await anyio.sleep(3)

    with pytest.raises(ExceptionGroup) as caught:
        async with graceful_scope(drain_timeout=10, **NO_SIGNALS) as scope:
            await scope.start(worker)
            scope.request_shutdown("deploy")
            await draining.wait()
            raise KeyError("body broke")
    assert caught.group_contains(KeyError)
    report = scope.report
    assert report.trigger == "request"
    assert [(s.name, s.outcome, s.finished_at) for s in report.services] == [
        ("worker", "returned", 3),
        ("body", "failed", 0),
    ]
    assert report.exit_code == 1


async def test_second_signal_during_a_drain_skips_the_earlier_services_drain(
    mock_clock: MockClock,
) -> None:
    """Escalation while a later service drains: the earlier service never sees
    STOPPING/DRAINING, it goes straight to CANCELLING and loses its work."""
    phases: dict[str, list[Phase]] = {"early": [], "late": []}

    async def busy(token: ShutdownToken, *, task_status: TaskStatus[None]) -> None:
        with token.in_flight("job"):
            task_status.started()
            try:
                await anyio.sleep_forever()
            finally:
                phases[token.name].append(token.phase)

    async with graceful_scope(drain_timeout=10, **ON_SIGUSR1) as scope:
        await scope.start(busy, name="early")
        await scope.start(busy, name="late")
        signal.raise_signal(signal.SIGUSR1)
        await scope.token.wait_phase(Phase.DRAINING)
        signal.raise_signal(signal.SIGUSR1)
    assert phases == {"early": [Phase.CANCELLING], "late": [Phase.CANCELLING]}
    assert scope.report.cancelled_in_flight == ("early: job", "late: job")
    assert [(s.name, s.outcome) for s in scope.report.services] == [
        ("early", "cancelled"),
        ("late", "cancelled"),
    ]


async def test_a_service_that_returns_before_its_turn(mock_clock: MockClock) -> None:
    """An earlier service returns on its own while a later one drains: it is
    reported returned, never asked to stop."""

    async def quits_at_stop(
        token: ShutdownToken, *, task_status: TaskStatus[None]
    ) -> None:
        task_status.started()
        await anyio.sleep(2)

    async def slow(token: ShutdownToken, *, task_status: TaskStatus[None]) -> None:
        task_status.started()
        with token.in_flight("job"):
            await anyio.sleep(5)

    async with graceful_scope(**NO_SIGNALS) as scope:
        await scope.start(quits_at_stop)
        await scope.start(slow)
        scope.request_shutdown()
    first, second = scope.report.services
    assert (first.outcome, first.stop_requested_at, first.finished_at) == (
        "returned",
        None,
        2,
    )
    assert (second.outcome, second.finished_at) == ("returned", 5)
    assert scope.report.clean


async def test_start_soon_right_before_the_trigger() -> None:
    """A service added with start_soon just before the trigger is stopped
    before it ever reaches a checkpoint."""
    ran: list[str] = []

    async def late(token: ShutdownToken) -> None:
        ran.append("began")
        await anyio.sleep_forever()

    async with graceful_scope(**NO_SIGNALS) as scope:
        scope.start_soon(late)
        scope.request_shutdown()
    assert ran in ([], ["began"])
    assert scope.report.services[0].outcome == "stopped"
    assert scope.report.clean


async def test_request_shutdown_from_a_thread_racing_with_the_exit() -> None:
    """A thread calling request_shutdown() in a loop while the scope ends on
    its own, and after: never raises, and the scope still reports correctly."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def hammer(scope: Any) -> None:
        try:
            while not stop.is_set():
                scope.request_shutdown("from thread")
        except BaseException as exc:  # noqa: BLE001 -- collected, then asserted on
            errors.append(exc)

    async def short(token: ShutdownToken) -> None:
        await anyio.sleep(0.02)

    async with graceful_scope(**NO_SIGNALS) as scope:
        scope.start_soon(short)
        thread = threading.Thread(target=hammer, args=(scope,))
        thread.start()
        await scope.token.wait_phase(Phase.STOPPING)
    await anyio.sleep(0.02)
    stop.set()
    thread.join()
    assert errors == []
    assert scope.report.trigger == "request"
    assert scope.report.reason == "from thread"


def test_handlers_are_restored_when_entry_fails_after_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An error raised in graceful_scope's entry after the signal handlers were
    installed (here: the watchdog thread cannot start) restores them."""
    from shutdown_scope import _lifetime, _watchdog

    class Broken(_watchdog.Watchdog):
        def start(self) -> None:
            assert signal.getsignal(signal.SIGUSR1) is not before  # installed
            raise OSError("too many open files")

    monkeypatch.setattr(_lifetime, "Watchdog", Broken)
    before = signal.getsignal(signal.SIGUSR1)

    async def main() -> None:
        async with graceful_scope(signals=[signal.SIGUSR1], hard_exit=False):
            pass  # pragma: no cover

    for backend in ("asyncio", "trio"):
        with pytest.raises(OSError, match="too many open files"):
            anyio.run(main, backend=backend)
        assert signal.getsignal(signal.SIGUSR1) is before


async def test_shutdown_during_start_with_work_in_flight(mock_clock: MockClock) -> None:
    """A service still starting but with work in flight is drained before it
    is stopped; start() then raises ServiceNotStartedError(by_shutdown=True)."""

    async def warming(token: ShutdownToken, *, task_status: TaskStatus[None]) -> None:
        with token.in_flight("warm cache"):
            await anyio.sleep(4)
        await anyio.sleep(1000)
        task_status.started()  # pragma: no cover

    async def trigger_later(token: ShutdownToken) -> None:
        await anyio.sleep(1)
        scope.request_shutdown()

    caught: list[ServiceNotStartedError] = []
    async with graceful_scope(drain_timeout=10, **NO_SIGNALS) as scope:
        scope.start_soon(trigger_later)
        try:
            await scope.start(warming)
        except ServiceNotStartedError as exc:
            caught.append(exc)
    assert [e.by_shutdown for e in caught] == [True]
    svc = scope.report.services[1]
    assert (svc.name, svc.outcome, svc.finished_at) == ("warming", "not started", 3)
    assert svc.stopped_while_starting
    assert (scope.report.exit_code, scope.report.errors) == (1, ())
