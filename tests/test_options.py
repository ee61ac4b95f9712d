"""Options of graceful_scope: invalid budgets, signals and the plan check."""

from __future__ import annotations

import math
import signal
import warnings
from typing import Any

import anyio
import pytest

from shutdown_scope import ShutdownPlanWarning, graceful_scope

pytestmark = pytest.mark.anyio


async def enter(**options: Any) -> None:
    async with graceful_scope(hard_exit=False, **options):
        pass


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"drain_timeout": -1}, ValueError, r"drain_timeout must be >= 0 seconds"),
        ({"cancel_timeout": math.nan}, ValueError, r"cancel_timeout .* not NaN"),
        ({"announce_delay": "5"}, TypeError, r"announce_delay must be a number"),
        ({"drain_timeout": True}, TypeError, r"not bool"),
        ({"drain_timeout": None}, TypeError, r"not NoneType"),
        ({"grace_period": 0}, ValueError, r"grace_period must be > 0"),
        ({"signal_debounce": 1.5}, ValueError, r"under 1 second"),
        ({"signal_debounce": 1}, ValueError, r"under 1 second"),
        ({"signal_debounce": -0.1}, ValueError, r"signal_debounce must be >= 0"),
        ({"signals": [signal.SIGKILL]}, ValueError, r"SIGKILL cannot be caught"),
        ({"signals": [9999]}, ValueError, r"unknown signal number 9999"),
        ({"signals": ["SIGTERM"]}, TypeError, r"signal numbers such as"),
        ({"signals": "SIGTERM"}, TypeError, r"iterable of signal numbers"),
        ({"signals": 15}, TypeError, r"iterable of signal numbers"),
        ({"hard_exit_code": 300}, ValueError, r"from 0 to 255"),
        ({"hard_exit_code": "1"}, TypeError, r"None or an int"),
    ],
)
async def test_invalid_options_say_the_rule(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        await enter(**{"signals": (), **options})


async def test_hard_exit_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="hard_exit must be True or False"):
        async with graceful_scope(signals=(), hard_exit=1):  # type: ignore[arg-type]
            pass  # pragma: no cover


async def test_infinite_budgets_are_allowed() -> None:
    await enter(signals=(), drain_timeout=math.inf, cancel_timeout=math.inf)


async def test_a_plan_that_does_not_fit_the_grace_period_warns() -> None:
    with pytest.warns(ShutdownPlanWarning) as warned:
        await enter(
            signals=(),
            announce_delay=5,
            drain_timeout=20,
            cancel_timeout=10,
            grace_period=30,
        )
    (warning,) = warned
    assert str(warning.message).startswith("the shutdown plan takes up to 35 s")
    assert "grace_period is 30 s" in str(warning.message)
    assert warning.filename == __file__  # points at the caller


async def test_a_plan_that_fits_does_not_warn() -> None:
    await enter(signals=(), drain_timeout=20, cancel_timeout=5, grace_period=30)


@pytest.mark.parametrize(
    ("announce_delay", "drain_timeout", "cancel_timeout", "grace_period"),
    [
        (5, 20, 5, 30),
        (0, 20, 0, 20),
        # float sums that land a hair above the grace period: 0.1 + 0.2 is
        # 0.30000000000000004, a rounding error, not a plan that does not fit
        (0.1, 0.2, 0, 0.3),
        (1.1, 2.2, 0, 3.3),
        (0.1, 3.2, 0.0, 3.3),
    ],
)
async def test_a_plan_exactly_equal_to_the_grace_period_fits(
    announce_delay: float,
    drain_timeout: float,
    cancel_timeout: float,
    grace_period: float,
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        await enter(
            signals=(),
            announce_delay=announce_delay,
            drain_timeout=drain_timeout,
            cancel_timeout=cancel_timeout,
            grace_period=grace_period,
        )


@pytest.mark.parametrize(
    ("over", "total"), [(1e-6, "30.000001"), (0.001, "30.001"), (1, "31")]
)
async def test_a_plan_a_microsecond_over_the_grace_period_warns(
    over: float, total: str
) -> None:
    with pytest.warns(ShutdownPlanWarning) as warned:
        await enter(
            signals=(),
            announce_delay=5,
            drain_timeout=20 + over,
            cancel_timeout=5,
            grace_period=30,
        )
    (warning,) = warned
    assert str(warning.message).startswith(f"the shutdown plan takes up to {total} s")
    assert "grace_period is 30 s" in str(warning.message)


async def test_infinite_drain_never_fits_a_grace_period() -> None:
    with pytest.warns(ShutdownPlanWarning, match="up to inf s"):
        await enter(signals=(), drain_timeout=math.inf, grace_period=30)


async def test_duplicate_signals_are_installed_once() -> None:
    before = signal.getsignal(signal.SIGUSR1)
    async with graceful_scope(
        signals=[signal.SIGUSR1, signal.SIGUSR1], hard_exit=False
    ):
        assert signal.getsignal(signal.SIGUSR1) is not before
    assert signal.getsignal(signal.SIGUSR1) is before


async def test_signals_outside_the_main_thread_are_refused() -> None:
    async def in_thread() -> str:
        try:
            async with graceful_scope(hard_exit=False):
                pass
        except RuntimeError as exc:
            return str(exc)
        return "no error"  # pragma: no cover

    def run_in_thread() -> str:
        return anyio.run(in_thread)

    message = await anyio.to_thread.run_sync(run_in_thread)
    assert "only in the main thread" in message
    assert "signals=()" in message


async def test_no_signals_work_outside_the_main_thread() -> None:
    async def in_thread() -> str:
        async with graceful_scope(signals=(), hard_exit=False) as scope:
            scope.request_shutdown("from the thread")
        return scope.report.reason

    def run_in_thread() -> str:
        return anyio.run(in_thread)

    assert await anyio.to_thread.run_sync(run_in_thread) == "from the thread"
