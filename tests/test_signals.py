"""Signals in this process: triggers, escalation, restoring, nesting.

Real signals, raised with ``signal.raise_signal`` while the scope's handler is
installed; the hard exit (third signal) is tested in real child processes in
test_process_signals.py.
"""

from __future__ import annotations

import math
import signal
from collections.abc import Iterator
from types import FrameType

import anyio
import pytest
from _services import ON_SIGUSR1, late_cleanup
from anyio.abc import TaskStatus
from trio.testing import MockClock

from shutdown_scope import Phase, ShutdownToken, graceful_scope

pytestmark = pytest.mark.anyio


async def holds_work(token: ShutdownToken, *, task_status: TaskStatus[None]) -> None:
    with token.in_flight("job"):
        task_status.started()
        await anyio.sleep_forever()


@pytest.fixture
def custom_handler() -> Iterator[list[int]]:
    received: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    original = signal.signal(signal.SIGUSR1, handler)
    try:
        yield received
    finally:
        signal.signal(signal.SIGUSR1, original)


async def test_a_signal_begins_the_shutdown() -> None:
    async def idle(token: ShutdownToken, *, task_status: TaskStatus[None]) -> None:
        task_status.started()
        await anyio.sleep_forever()

    async with graceful_scope(signals=[signal.SIGUSR1], hard_exit=False) as scope:
        await scope.start(idle)
        signal.raise_signal(signal.SIGUSR1)
        await scope.token.wait_phase(Phase.STOPPING)
        assert scope.token.reason == "received SIGUSR1"
        scope.request_shutdown("too late to matter")
    report = scope.report
    assert (report.trigger, report.signal) == ("signal", signal.SIGUSR1)
    assert report.reason == "received SIGUSR1"
    assert report.signals_received == 1
    assert report.clean


@pytest.mark.parametrize(
    ("announce_delay", "second_at", "phases"),
    [
        (0.0, Phase.DRAINING, [Phase.STOPPING, Phase.DRAINING, Phase.CANCELLING]),
        (math.inf, Phase.STOPPING, [Phase.STOPPING, Phase.CANCELLING]),
    ],
    ids=["cancels_what_is_in_flight", "during_the_announce_skips_the_drain"],
)
async def test_a_second_signal(
    announce_delay: float, second_at: Phase, phases: list[Phase]
) -> None:
    async with graceful_scope(
        announce_delay=announce_delay, drain_timeout=math.inf, **ON_SIGUSR1
    ) as scope:
        await scope.start(holds_work)
        signal.raise_signal(signal.SIGUSR1)
        await scope.token.wait_phase(second_at)
        signal.raise_signal(signal.SIGUSR1)
    report = scope.report
    assert [p.phase for p in report.phases] == phases
    assert report.cancelled_in_flight == ("holds_work: job",)
    assert report.exit_code == 1


async def test_the_previous_python_handler_is_restored(
    custom_handler: list[int],
) -> None:
    before = signal.getsignal(signal.SIGUSR1)
    async with graceful_scope(signals=[signal.SIGUSR1], hard_exit=False) as scope:
        assert signal.getsignal(signal.SIGUSR1) is not before
        scope.request_shutdown()
    assert signal.getsignal(signal.SIGUSR1) is before
    signal.raise_signal(signal.SIGUSR1)
    assert custom_handler == [signal.SIGUSR1]


async def test_default_handlers_are_restored() -> None:
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    async with graceful_scope(hard_exit=False) as scope:
        scope.request_shutdown()
    assert {sig: signal.getsignal(sig) for sig in before} == before


async def test_a_nested_scope_may_not_steal_signals() -> None:
    async with graceful_scope(signals=[signal.SIGUSR1], hard_exit=False) as outer:
        with pytest.raises(
            RuntimeError, match="enclosing graceful_scope already handles SIGUSR1"
        ):
            async with graceful_scope(signals=[signal.SIGUSR1], hard_exit=False):
                pass  # pragma: no cover
        handler = signal.getsignal(signal.SIGUSR1)
        async with graceful_scope(signals=(), hard_exit=False) as inner:
            signal.raise_signal(signal.SIGUSR1)
            await outer.token.wait_phase(Phase.STOPPING)
            assert inner.phase == Phase.RUNNING  # the outer scope got it
            inner.request_shutdown("inner done")
        assert signal.getsignal(signal.SIGUSR1) is handler
    assert outer.report.trigger == "signal"
    assert inner.report.reason == "inner done"


async def test_a_failed_install_restores_what_it_changed() -> None:
    before = signal.getsignal(signal.SIGUSR2)
    with pytest.raises(ValueError, match="unknown signal number"):
        async with graceful_scope(signals=[signal.SIGUSR2, 0], hard_exit=False):
            pass  # pragma: no cover
    assert signal.getsignal(signal.SIGUSR2) is before


# -- escalation moves the final deadline (virtual time) ------------------------------
# Two signals at most: in this process a third one (or a second in CANCELLING)
# would make the watchdog end pytest, whatever hard_exit says.


async def test_after_escalation_shield_cleanup_ends_at_the_new_deadline(
    mock_clock: MockClock,
) -> None:
    """The second signal (at 1) ends the budget at 1 + cancel_timeout = 4; a
    cleanup started at 3 gets until 4, not until 3 + cancel_timeout or the
    original final deadline (23)."""
    cleanup: list[tuple[float, float]] = []
    svc = late_cleanup(cleanup, first_step=2)  # a first cleanup step: from 1 to 3

    async with graceful_scope(
        drain_timeout=20,
        cancel_timeout=3,
        **ON_SIGUSR1,
    ) as scope:
        await scope.start(svc)
        signal.raise_signal(signal.SIGUSR1)
        await anyio.sleep(1)
        signal.raise_signal(signal.SIGUSR1)
    assert cleanup == [(4, 4)]
    report = scope.report
    assert [(p.phase, p.started) for p in report.phases] == [
        (Phase.STOPPING, 0),
        (Phase.DRAINING, 0),
        (Phase.CANCELLING, 1),
    ]
    (record,) = report.services
    assert (record.outcome, record.finished_at) == ("cancelled", 4)


async def test_escalation_cuts_the_cancel_wait_of_an_idle_service(
    mock_clock: MockClock,
) -> None:
    """An idle service that ignores its cancellation is waited for until the
    final deadline (0 + 20 + 3); the second signal (at 1) moves that wait, and
    the service's token deadline, to 1 + 3."""
    seen: list[tuple[float, Phase, float]] = []

    async def stubborn(token: ShutdownToken, *, task_status: TaskStatus[None]) -> None:
        task_status.started()
        try:
            await anyio.sleep_forever()  # nothing in flight
        finally:
            with anyio.CancelScope(shield=True):
                await token.wait_phase(Phase.CANCELLING)
                seen.append((anyio.current_time(), token.phase, token.deadline))
                await anyio.sleep(50)

    async with graceful_scope(
        drain_timeout=20,
        cancel_timeout=3,
        **ON_SIGUSR1,
    ) as scope:
        await scope.start(stubborn)
        signal.raise_signal(signal.SIGUSR1)
        await anyio.sleep(1)
        signal.raise_signal(signal.SIGUSR1)
    assert seen == [(1, Phase.CANCELLING, 4)]
    report = scope.report
    assert [(p.phase, p.started) for p in report.phases] == [
        (Phase.STOPPING, 0),
        (Phase.DRAINING, 0),
        (Phase.CANCELLING, 1),
        (Phase.EXITING, 4),
    ]
    (record,) = report.services
    assert (record.outcome, record.finished_at) == ("abandoned", 51)
    assert not report.clean
