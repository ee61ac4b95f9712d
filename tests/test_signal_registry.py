"""shutdown_scope.signals.open_signal_receiver: the process-wide signal registry.

Real signals, raised with ``signal.raise_signal`` (the Python handler runs at
once, in this thread), on both backends.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from types import FrameType

import anyio
import pytest

from shutdown_scope import Phase, graceful_scope
from shutdown_scope.signals import SignalReceiver, open_signal_receiver

pytestmark = pytest.mark.anyio

USR1, USR2 = signal.SIGUSR1, signal.SIGUSR2


@pytest.fixture
def custom_usr1() -> Iterator[list[int]]:
    """A Python handler of our own on SIGUSR1 while the test runs."""
    received: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    original = signal.signal(USR1, handler)
    try:
        yield received
    finally:
        signal.signal(USR1, original)


async def take(receiver: SignalReceiver, n: int) -> list[int]:
    got: list[int] = []
    async for signum in receiver:
        got.append(signum)
        if len(got) == n:
            break
    return got


async def test_every_receiver_gets_a_copy() -> None:
    async with (
        open_signal_receiver(USR1) as first,
        open_signal_receiver(USR1, USR2) as second,
    ):
        signal.raise_signal(USR1)
        signal.raise_signal(USR2)
        assert await take(first, 1) == [USR1]
        assert await take(second, 2) == [USR1, USR2]


async def test_the_previous_handler_comes_back_after_the_last_receiver(
    custom_usr1: list[int],
) -> None:
    original = signal.getsignal(USR1)
    async with open_signal_receiver(USR1) as outer:
        async with open_signal_receiver(USR1) as inner:
            signal.raise_signal(USR1)
            assert await take(inner, 1) == [USR1]
        # One receiver left: still ours, not the original.
        assert signal.getsignal(USR1) is not original
        signal.raise_signal(USR1)
        assert await take(outer, 2) == [USR1, USR1]
    assert signal.getsignal(USR1) is original
    assert custom_usr1 == []  # the registry had it meanwhile
    signal.raise_signal(USR1)
    assert custom_usr1 == [USR1]


async def test_default_disposition_comes_back() -> None:
    assert signal.getsignal(USR2) is signal.SIG_DFL
    async with open_signal_receiver(USR2):
        assert signal.getsignal(USR2) is not signal.SIG_DFL
    assert signal.getsignal(USR2) is signal.SIG_DFL


async def test_nothing_is_delivered_after_exit(custom_usr1: list[int]) -> None:
    async with open_signal_receiver(USR1) as gone:
        pass
    async with open_signal_receiver(USR1) as live:
        signal.raise_signal(USR1)
        assert await take(live, 1) == [USR1]
    # The receiver whose block exited neither buffered nor counted it.
    assert gone.dropped == 0
    assert [s async for s in gone] == []


async def test_unread_signals_are_dropped_at_exit() -> None:
    async with open_signal_receiver(USR1) as receiver:
        signal.raise_signal(USR1)
    assert [s async for s in receiver] == []


async def test_a_full_buffer_drops_and_counts_without_blocking() -> None:
    async with (
        open_signal_receiver(USR1, buffer_size=2) as small,
        open_signal_receiver(USR1) as roomy,
    ):
        for _ in range(5):
            signal.raise_signal(USR1)
        assert small.dropped == 3
        assert await take(small, 2) == [USR1, USR1]
        assert await take(roomy, 5) == [USR1] * 5
        assert roomy.dropped == 0


async def test_the_handler_runs_while_the_loop_is_blocked() -> None:
    """Delivery happens inside the signal handler, not on the loop: a loop
    blocked by synchronous code still counts what overflows."""
    async with open_signal_receiver(USR1, buffer_size=1) as receiver:
        deadline = time.monotonic() + 0.05
        for _ in range(3):
            signal.raise_signal(USR1)
        while time.monotonic() < deadline:  # blocks the loop on purpose
            pass
        assert receiver.dropped == 2  # counted before the loop ran again
        assert await take(receiver, 1) == [USR1]


async def test_a_receiver_beside_a_running_scope_gets_the_scope_signal_too() -> None:
    async with (
        open_signal_receiver(signal.SIGTERM) as receiver,
        graceful_scope(signals=[signal.SIGTERM], hard_exit=False) as scope,
    ):
        signal.raise_signal(signal.SIGTERM)
        assert await take(receiver, 1) == [signal.SIGTERM]
        await scope.token.wait_phase(Phase.STOPPING)
    assert scope.report.trigger == "signal"
    assert scope.report.signals_received == 1


async def test_a_scope_beside_a_receiver_restores_the_receiver_handler() -> None:
    """The scope leaves first; the receiver still gets signals; the default
    comes back after both."""
    assert signal.getsignal(USR1) is signal.SIG_DFL
    async with open_signal_receiver(USR1) as receiver:
        async with graceful_scope(signals=[USR1], hard_exit=False) as scope:
            scope.request_shutdown("over")
        signal.raise_signal(USR1)  # the scope is gone: only the receiver
        assert await take(receiver, 1) == [USR1]
    assert scope.report.signals_received == 0
    assert signal.getsignal(USR1) is signal.SIG_DFL


async def test_a_nested_scope_asking_for_an_owned_signal_raises() -> None:
    """The rule: one scope owns a signal at a time; receivers are not owners."""
    async with graceful_scope(signals=[USR1], hard_exit=False) as outer:
        with pytest.raises(RuntimeError, match="already handles SIGUSR1"):
            async with graceful_scope(signals=[USR1]):
                pass  # pragma: no cover
        async with open_signal_receiver(USR1) as receiver:
            signal.raise_signal(USR1)
            assert await take(receiver, 1) == [USR1]
        await outer.token.wait_phase(Phase.STOPPING)
    assert outer.report.trigger == "signal"


@pytest.mark.parametrize(
    ("signals", "options", "error", "match"),
    [
        ((), {}, ValueError, "at least one signal"),
        ((signal.SIGKILL,), {}, ValueError, "SIGKILL cannot be caught"),
        (("SIGUSR1",), {}, TypeError, "signal numbers"),
        ((USR1,), {"buffer_size": 0}, ValueError, "buffer_size must be >= 1"),
        ((USR1,), {"buffer_size": 1.5}, TypeError, "buffer_size must be an int"),
    ],
)
async def test_bad_input(
    signals: tuple[object, ...],
    options: dict[str, object],
    error: type[Exception],
    match: str,
) -> None:
    with pytest.raises(error, match=match):
        async with open_signal_receiver(*signals, **options):  # type: ignore[arg-type]
            pass  # pragma: no cover
    assert signal.getsignal(USR1) is signal.SIG_DFL


def test_only_the_main_thread_may_open_one() -> None:
    async def main() -> None:
        async with open_signal_receiver(USR1):
            pass  # pragma: no cover

    def in_a_thread() -> None:
        anyio.run(main)

    errors: list[BaseException] = []

    def runner() -> None:
        try:
            in_a_thread()
        except BaseException as exc:  # noqa: BLE001 -- collected for the assert
            errors.append(exc)

    import threading

    thread = threading.Thread(target=runner)
    thread.start()
    thread.join()
    assert len(errors) == 1
    assert isinstance(errors[0], RuntimeError)
    assert "main thread" in str(errors[0])
    assert signal.getsignal(USR1) is signal.SIG_DFL
