"""shutdown_scope.run(): the report becomes the exit code."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from _spawn import Child
from anyio.abc import TaskStatus

from shutdown_scope import ShutdownReport, ShutdownToken, graceful_scope, run

CHILD = str(Path(__file__).parent / "_fast_exit_child.py")

BACKENDS = pytest.mark.parametrize("backend", ["asyncio", "trio"])


async def idle(token: ShutdownToken) -> None:
    await anyio.sleep_forever()


async def lose_work() -> None:
    async def busy(token: ShutdownToken, *, task_status: TaskStatus[None]) -> None:
        with token.in_flight("job"):
            task_status.started()
            await anyio.sleep_forever()

    async with graceful_scope(signals=(), hard_exit=False, drain_timeout=0) as scope:
        await scope.start(busy)
        scope.request_shutdown()


async def stop_cleanly(reason: str) -> None:
    async with graceful_scope(signals=(), hard_exit=False) as scope:
        scope.request_shutdown(reason)


@BACKENDS
def test_a_clean_stop_exits_0(backend: str) -> None:
    with pytest.raises(SystemExit) as exited:
        run(stop_cleanly, "bye", backend=backend)
    assert exited.value.code == 0


@BACKENDS
def test_lost_work_exits_1(backend: str) -> None:
    with pytest.raises(SystemExit) as exited:
        run(lose_work, backend=backend)
    assert exited.value.code == 1


async def abandon_idle_service() -> None:
    async def stubborn(token: ShutdownToken, *, task_status: TaskStatus[None]) -> None:
        task_status.started()
        with anyio.CancelScope(shield=True):  # ignores cancellation, holds nothing
            await anyio.sleep(0.05)

    async with graceful_scope(
        signals=(), hard_exit=False, drain_timeout=0, cancel_timeout=0
    ) as scope:
        await scope.start(stubborn)
        scope.request_shutdown()
    assert [s.outcome for s in scope.report.services] == ["abandoned"]
    assert scope.report.cancelled_in_flight == ()


@BACKENDS
def test_an_abandoned_service_exits_1_even_with_nothing_lost(backend: str) -> None:
    with pytest.raises(SystemExit) as exited:
        run(abandon_idle_service, backend=backend)
    assert exited.value.code == 1


def test_the_outermost_scope_decides() -> None:
    async def main() -> None:
        async with graceful_scope(signals=(), hard_exit=False) as outer:
            await lose_work()  # an inner scope that lost work
            outer.request_shutdown()

    with pytest.raises(SystemExit) as exited:
        run(main)
    assert exited.value.code == 0


def test_a_returned_report_decides() -> None:
    async def main() -> ShutdownReport:
        async with graceful_scope(
            signals=(), hard_exit=False, drain_timeout=0
        ) as scope:
            scope.start_soon(idle)
            with scope.token.in_flight("body job"):
                scope.request_shutdown()
                await anyio.sleep_forever()
        return scope.report

    with pytest.raises(SystemExit) as exited:
        run(main, backend_options={"debug": True})
    assert exited.value.code == 1


def test_no_scope_exits_0() -> None:
    async def main() -> None:
        await anyio.lowlevel.checkpoint()

    with pytest.raises(SystemExit) as exited:
        run(main)
    assert exited.value.code == 0


def test_errors_propagate() -> None:
    async def main() -> None:
        raise LookupError("no config")

    with pytest.raises(LookupError, match="no config"):
        run(main)


def test_unknown_backend() -> None:
    with pytest.raises(ValueError, match="'asyncio' or 'trio'"):
        run(stop_cleanly, "x", backend="curio")


def test_fast_exit_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="fast_exit must be True or False"):
        run(stop_cleanly, "x", fast_exit="yes")  # type: ignore[arg-type]


@pytest.mark.subprocess
@BACKENDS
@pytest.mark.parametrize("outcome", ["clean", "lost"])
@pytest.mark.parametrize("exit_mode", ["fast_exit", "normal_exit"])
def test_fast_exit_keeps_exit_code_atexit_logs_and_output(
    backend: str,
    outcome: str,
    exit_mode: str,
    tmp_path: Path,
) -> None:
    marker = tmp_path / "marker"
    fast = exit_mode == "fast_exit"
    argv = (CHILD, backend, "1" if fast else "0", outcome, str(marker))
    with Child(*argv) as child:
        code = child.finish()
    assert code == (0 if outcome == "clean" else 1), child.output
    assert "logged: the scope is done" in child.lines, child.output
    assert "printed, not flushed" in child.lines, child.output
    marks = marker.read_text().split()
    # The user's atexit handler runs either way; the interpreter's teardown
    # (here: collecting a module global) only without fast_exit.
    assert marks == (["atexit"] if fast else ["atexit", "teardown"])
