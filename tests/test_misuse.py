"""An API that is hard to misuse: each mistake gets a message with the fix.

Also the start warning (virtual time), the first signal's line on stderr and
the report printed once.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import signal
import subprocess
import sys
import textwrap
from typing import Any

import anyio
import pytest
from _services import NO_SIGNALS, ON_SIGUSR1
from anyio.abc import TaskStatus
from trio.testing import MockClock

from shutdown_scope import ShutdownToken, graceful_scope, run

pytestmark = pytest.mark.anyio


async def good(token: ShutdownToken, *, task_status: TaskStatus[None]) -> None:
    task_status.started()
    await token.wait_phase(token.phase.STOPPING)


async def no_token(*, task_status: TaskStatus[None]) -> None:  # pragma: no cover
    task_status.started()


async def token_second(
    app: str, token: ShutdownToken, *, task_status: TaskStatus[None]
) -> None:  # pragma: no cover
    task_status.started()


async def no_task_status(token: ShutdownToken) -> None:  # pragma: no cover
    pass


async def with_option(
    token: ShutdownToken, *, port: int, task_status: TaskStatus[int]
) -> None:
    task_status.started(port)


@pytest.mark.parametrize("via", ["start", "start_soon"])
async def test_keyword_options_say_functools_partial(via: str) -> None:
    async with graceful_scope(**NO_SIGNALS) as scope:
        method: Any = getattr(scope, via)
        with pytest.raises(
            TypeError, match=r"functools\.partial\(with_option, port="
        ) as caught:
            await method(with_option, port=80) if via == "start" else method(
                with_option, port=80
            )
        assert "\n" not in str(caught.value)
        # The fix works; nothing was added by the refused call.
        assert await scope.start(functools.partial(with_option, port=80)) == 80
        scope.request_shutdown()
    assert [s.name for s in scope.report.services] == ["with_option"]
    assert scope.report.clean


@pytest.mark.parametrize(
    ("fn", "args", "match"),
    [
        (no_token, (), "services receive the token first"),
        (token_second, ("app",), "services receive the token first: token_second"),
        (good, ("extra",), "services receive the token first"),
        (no_task_status, (), "must accept task_status"),
        (42, (), "must be an async function"),
    ],
)
async def test_a_service_that_cannot_take_the_token_first(
    fn: Any, args: tuple[object, ...], match: str
) -> None:
    async with graceful_scope(**NO_SIGNALS) as scope:
        with pytest.raises(TypeError, match=match):
            await scope.start(fn, *args)
        scope.request_shutdown()
    assert scope.report.services == ()
    assert scope.report.clean


async def test_a_coroutine_instead_of_a_service() -> None:
    async with graceful_scope(**NO_SIGNALS) as scope:
        coro = good(scope.token, task_status=anyio.TASK_STATUS_IGNORED)
        with pytest.raises(
            TypeError, match="takes the async function, not a coroutine"
        ):
            scope.start_soon(coro)  # type: ignore[arg-type]
        assert inspect.getcoroutinestate(coro) == "CORO_CLOSED"  # not "never awaited"
        scope.request_shutdown()


def test_run_of_a_coroutine_says_pass_the_function() -> None:
    async def main() -> None:  # pragma: no cover
        pass

    coro = main()
    with pytest.raises(TypeError, match=r"run\(main\), not run\(main\(\)\)"):
        run(coro)  # type: ignore[arg-type]
    assert inspect.getcoroutinestate(coro) == "CORO_CLOSED"


class _VirtualTimes(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, float]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "event", None) == "service_not_started":
            self.seen.append((record.service, anyio.current_time()))  # type: ignore[attr-defined]


async def test_a_service_slow_to_start_is_named(mock_clock: MockClock) -> None:
    async def slow(token: ShutdownToken, *, task_status: TaskStatus[None]) -> None:
        await anyio.sleep(10)
        task_status.started()

    handler = _VirtualTimes()
    logger = logging.getLogger("shutdown_scope")
    logger.addHandler(handler)
    try:
        async with graceful_scope(start_timeout_warning=3, **NO_SIGNALS) as scope:
            t0 = anyio.current_time()
            await scope.start(good, name="quick")
            await scope.start(slow, name="db")
            assert anyio.current_time() == t0 + 10
            scope.request_shutdown()
    finally:
        logger.removeHandler(handler)
    assert handler.seen == [("db", t0 + 3)]  # named once; the quick one never


async def test_the_default_start_warning_is_a_few_seconds(
    mock_clock: MockClock,
) -> None:
    async def never(token: ShutdownToken, *, task_status: TaskStatus[None]) -> None:
        await anyio.sleep(math.inf)

    handler = _VirtualTimes()
    logging.getLogger("shutdown_scope").addHandler(handler)
    try:
        async with graceful_scope(
            drain_timeout=1, cancel_timeout=1, **NO_SIGNALS
        ) as scope:
            t0 = anyio.current_time()
            scope.start_soon(lambda _token: scope_request_after(scope, 6))
            with pytest.raises(Exception):  # noqa: B017, PT011 -- ServiceNotStartedError
                await scope.start(never, name="hung")
    finally:
        logging.getLogger("shutdown_scope").removeHandler(handler)
    assert handler.seen == [("hung", t0 + 5)]


async def scope_request_after(scope: Any, seconds: float) -> None:
    await anyio.sleep(seconds)
    scope.request_shutdown("test over")


@pytest.mark.parametrize(
    ("value", "error"), [(0, ValueError), (-1, ValueError), ("5", TypeError)]
)
async def test_bad_start_timeout_warning(value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="start_timeout_warning"):
        async with graceful_scope(start_timeout_warning=value, **NO_SIGNALS):  # type: ignore[arg-type]
            pass  # pragma: no cover


async def test_the_first_signal_prints_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with graceful_scope(
        drain_timeout=20,
        cancel_timeout=5,
        **ON_SIGUSR1,
    ) as scope:
        with scope.token.in_flight("job"):
            signal.raise_signal(signal.SIGUSR1)
            await scope.token.wait_phase(scope.token.phase.STOPPING)
            lines = capsys.readouterr().err.splitlines()
            signal.raise_signal(signal.SIGUSR1)  # the second: no new line
            await scope.token.wait_phase(scope.token.phase.CANCELLING)
    assert lines == [
        (
            "shutdown_scope: SIGUSR1: stopping, 1 in flight, up to 25 s;"
            " a second SIGUSR1 cancels"
        )
    ]
    assert "stopping" not in capsys.readouterr().err


@pytest.mark.subprocess
def test_an_unclean_report_is_printed_once() -> None:
    """Without logging configured, an unclean stop shows its report once
    (the WARNING record, through logging's last resort), nothing else."""
    code = textwrap.dedent(
        """
        import anyio
        from shutdown_scope import graceful_scope, run

        async def main():
            async with graceful_scope(drain_timeout=0, cancel_timeout=1) as scope:
                with scope.token.in_flight("job"):
                    scope.request_shutdown("test")
                    await anyio.sleep_forever()

        run(main)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.count("shutdown NOT clean") == 1, done.stderr
    assert done.stdout == ""
