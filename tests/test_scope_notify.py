"""What a graceful_scope tells systemd: a real datagram socket plays the manager.

Messages are read as they arrive (``anyio.wait_readable``), stamped with the
time they were read; under trio's MockClock that is the virtual time they were
sent, so the trio-only tests assert exact times.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from _services import NO_SIGNALS, idle
from _spawn import fill_queue
from anyio.abc import TaskStatus
from trio.testing import MockClock

from shutdown_scope import Phase, ShutdownScope, ShutdownToken, graceful_scope, systemd

if sys.version_info < (3, 11):
    from exceptiongroup import ExceptionGroup

pytestmark = pytest.mark.anyio

_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class Manager:
    """The service manager's end of NOTIFY_SOCKET: what the scope sent, when."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.log: list[tuple[float, str]] = []

    def _drain(self) -> None:
        while True:
            try:
                data = self.sock.recv(8192)
            except BlockingIOError:
                return
            self.log.append((anyio.current_time(), data.decode()))

    @property
    def messages(self) -> list[str]:
        """Everything received so far, in order."""
        self._drain()
        return [message for _, message in self.log]

    def timed(self) -> list[tuple[float, str]]:
        self._drain()
        return list(self.log)

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[None]:
        """Read each message as it arrives, for the time it came."""

        async def read() -> None:
            while True:
                await anyio.wait_readable(self.sock)
                self._drain()

        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            yield
            tg.cancel_scope.cancel()
        self._drain()


@pytest.fixture
def manager(monkeypatch: pytest.MonkeyPatch) -> Iterator[Manager]:
    for name in _VARIABLES:
        monkeypatch.delenv(name, raising=False)
    name = f"shutdown-scope-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(f"\0{name}")
        sock.setblocking(False)
        monkeypatch.setenv("NOTIFY_SOCKET", f"@{name}")
        yield Manager(sock)


def without_extend(messages: list[str]) -> list[str]:
    return [
        "\n".join(
            line
            for line in message.split("\n")
            if not line.startswith("EXTEND_TIMEOUT_USEC=")
        )
        for message in messages
    ]


def extend_of(message: str) -> int | None:
    for line in message.split("\n"):
        if line.startswith("EXTEND_TIMEOUT_USEC="):
            return int(line.removeprefix("EXTEND_TIMEOUT_USEC="))
    return None


def stopper(
    scope: ShutdownScope, reason: str, delay: float = 0.01
) -> Callable[[ShutdownToken], Awaitable[None]]:
    """A service that asks the scope to stop after ``delay``."""

    async def stopper(token: ShutdownToken) -> None:
        await anyio.sleep(delay)
        scope.request_shutdown(reason)

    return stopper


# -- READY ------------------------------------------------------------------------


async def test_ready_once_the_body_returns_not_before(manager: Manager) -> None:
    async with graceful_scope(**NO_SIGNALS) as scope:
        await scope.start(idle)
        assert manager.messages == []  # the body still runs: no READY yet
        scope.start_soon(stopper(scope, "deploy"), name="stopper")
    assert without_extend(manager.messages) == [
        "READY=1\nSTATUS=running",
        "STOPPING=1\nSTATUS=stopping: deploy",
        "STATUS=draining: nothing in flight",
        "STATUS=done: clean",
    ]
    assert scope.report.clean


async def test_no_ready_when_the_shutdown_came_first(manager: Manager) -> None:
    async with graceful_scope(**NO_SIGNALS) as scope:
        await scope.start(idle)
        scope.request_shutdown("deploy")
    assert without_extend(manager.messages) == [
        "STOPPING=1\nSTATUS=stopping: deploy",
        "STATUS=draining: nothing in flight",
        "STATUS=done: clean",
    ]


async def test_a_body_that_finishes_everything_only_says_done(
    manager: Manager,
) -> None:
    async with graceful_scope(**NO_SIGNALS) as scope:
        pass  # nothing is left running: nothing was ever ready
    assert scope.report.trigger == "finished"
    assert manager.messages == ["STATUS=done: clean"]


# -- the shutdown -----------------------------------------------------------------


async def worker(
    token: ShutdownToken, jobs: dict[str, float], *, task_status: TaskStatus[None]
) -> None:
    """Jobs in flight from the start; each takes its time once DRAINING."""

    async def job(label: str, seconds: float) -> None:
        with token.in_flight(label):
            started.set()
            await token.wait_phase(Phase.DRAINING)
            await anyio.sleep(seconds)

    async with anyio.create_task_group() as tg:
        for label, seconds in jobs.items():
            started = anyio.Event()
            tg.start_soon(job, label, seconds)
            await started.wait()
        task_status.started()


SLOW_DRAIN = {"job 1": 1.5, "job 2": 2.5, "job 3": math.inf}


async def slow_drain(
    manager: Manager, *, systemd_notify: bool = True
) -> tuple[ShutdownScope, float]:
    """Announce 2 + drain 10 + cancel 3, 100 s after the start; job 3 never
    ends. Returns the scope and how long it took."""
    start = anyio.current_time()
    async with (
        manager.reading(),
        graceful_scope(
            announce_delay=2,
            drain_timeout=10,
            cancel_timeout=3,
            systemd_notify=systemd_notify,
            **NO_SIGNALS,
        ) as scope,
    ):
        await scope.start(worker, SLOW_DRAIN)
        scope.start_soon(stopper(scope, "deploy", 100), name="stopper")
    return scope, anyio.current_time() - start


async def test_phases_heartbeats_and_the_end_on_virtual_time(
    manager: Manager, mock_clock: MockClock
) -> None:
    scope, _ = await slow_drain(manager)
    jobs = "worker: job 1, worker: job 2, worker: job 3"
    assert manager.timed() == [
        (0, "READY=1\nSTATUS=running"),
        (100, "STOPPING=1\nSTATUS=stopping: deploy\nEXTEND_TIMEOUT_USEC=15000000"),
        (102, f"STATUS=draining: 3 in flight ({jobs})\nEXTEND_TIMEOUT_USEC=13000000"),
        # heartbeats: each second in which the work in flight changed
        (
            104,
            (
                "STATUS=draining: 2 in flight (worker: job 2, worker: job 3)"
                "\nEXTEND_TIMEOUT_USEC=11000000"
            ),
        ),
        (
            105,
            (
                "STATUS=draining: 1 in flight (worker: job 3)"
                "\nEXTEND_TIMEOUT_USEC=10000000"
            ),
        ),
        (
            112,
            (
                "STATUS=cancelling: 1 in flight (worker: job 3)"
                "\nEXTEND_TIMEOUT_USEC=3000000"
            ),
        ),
        (112, "STATUS=done: NOT clean: cancelled 1 in flight (worker: job 3)"),
    ]
    assert scope.report.cancelled_in_flight == ("worker: job 3",)


async def test_extensions_never_reach_past_the_scope_budget(
    manager: Manager, mock_clock: MockClock
) -> None:
    await slow_drain(manager)
    final_deadline = 100 + 2 + 10 + 3
    extensions = [
        (t, extend_of(m)) for t, m in manager.timed() if extend_of(m) is not None
    ]
    assert len(extensions) == 5
    for t, usec in extensions:
        assert usec is not None
        assert 0 < usec <= (final_deadline - t) * 1_000_000


async def test_the_notifier_changes_neither_the_report_nor_the_timing(
    manager: Manager, mock_clock: MockClock
) -> None:
    quiet, quiet_took = await slow_drain(manager, systemd_notify=False)
    assert manager.messages == []
    told, told_took = await slow_drain(manager)
    assert len(manager.messages) == 7
    assert told_took == quiet_took == 112
    assert told.report.as_dict() == quiet.report.as_dict()


async def test_no_extension_without_a_finite_budget(manager: Manager) -> None:
    async with graceful_scope(drain_timeout=math.inf, **NO_SIGNALS) as scope:
        await scope.start(idle)
        scope.request_shutdown("deploy")
    assert manager.messages == [
        "STOPPING=1\nSTATUS=stopping: deploy",
        "STATUS=draining: nothing in flight",
        "STATUS=done: clean",
    ]


async def test_status_lines_are_single_and_short(manager: Manager) -> None:
    labels = ["a", "a", "b" * 100, "c", "d"]

    async def busy(token: ShutdownToken, *, task_status: TaskStatus[None]) -> None:
        with contextlib.ExitStack() as stack:
            for label in labels:
                stack.enter_context(token.in_flight(label))
            task_status.started()
            await token.wait_phase(Phase.DRAINING)

    async with graceful_scope(**NO_SIGNALS) as scope:
        await scope.start(busy)
        scope.request_shutdown("line one\nline two\0")
    stopping, draining, done = without_extend(manager.messages)
    assert stopping == "STOPPING=1\nSTATUS=stopping: line one line two "
    b31 = "b" * 31  # a label is cut at 40 characters
    assert draining == (
        f"STATUS=draining: 5 in flight (busy: a x2, busy: {b31}..., busy: c, ...)"
    )
    assert done == "STATUS=done: clean"


async def test_the_final_status_names_errors_and_abandoned_services(
    manager: Manager, mock_clock: MockClock
) -> None:
    async def stubborn(token: ShutdownToken, *, task_status: TaskStatus[None]) -> None:
        task_status.started()
        with token.in_flight("stuck"):
            await token.wait_phase(Phase.CANCELLING)
            with anyio.CancelScope(shield=True):
                await anyio.sleep(50.5)  # ignores the cancellation for a while

    async def failing(token: ShutdownToken) -> None:
        await anyio.sleep(1)
        raise RuntimeError("boom")

    with pytest.raises(ExceptionGroup):
        async with (
            manager.reading(),
            graceful_scope(drain_timeout=2, cancel_timeout=1, **NO_SIGNALS) as scope,
        ):
            await scope.start(stubborn)
            scope.start_soon(failing)
    reason = "service 'failing' raised RuntimeError('boom')"
    stuck = "1 in flight (stubborn: stuck)"
    errors = "1 error(s); stubborn abandoned"
    assert manager.timed() == [
        (0, "READY=1\nSTATUS=running"),
        (1, f"STOPPING=1\nSTATUS=stopping: {reason}\nEXTEND_TIMEOUT_USEC=3000000"),
        (1, f"STATUS=draining: {stuck}\nEXTEND_TIMEOUT_USEC=3000000"),
        (3, f"STATUS=cancelling: {stuck}\nEXTEND_TIMEOUT_USEC=1000000"),
        (4, f"STATUS=exiting: {stuck}"),  # the budget is spent: no extension
        (53.5, f"STATUS=done: NOT clean: cancelled {stuck}; {errors}"),
    ]


async def test_a_failed_service_ends_not_clean(manager: Manager) -> None:
    async def failing(token: ShutdownToken) -> None:
        raise RuntimeError("boom")

    with pytest.raises(ExceptionGroup):
        async with graceful_scope(**NO_SIGNALS) as scope:
            scope.start_soon(failing)
            await anyio.sleep_forever()
    assert without_extend(manager.messages) == [
        "STOPPING=1\nSTATUS=stopping: service 'failing' raised RuntimeError('boom')",
        "STATUS=draining: nothing in flight",  # the body, until it is cancelled
        "STATUS=done: NOT clean: 1 error(s)",
    ]


async def test_a_scope_cancelled_from_outside_still_ends_at_once(
    manager: Manager, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    with anyio.move_on_after(0.05) as outside:
        async with graceful_scope(**NO_SIGNALS) as scope:
            await scope.start(idle)
            await anyio.sleep_forever()
    assert outside.cancelled_caught
    assert scope.report.trigger == "cancelled"
    assert manager.messages == ["WATCHDOG=1", "STATUS=done: clean"]


# -- the watchdog -----------------------------------------------------------------


async def sleep_then_stop(seconds: float) -> ShutdownScope:
    async with graceful_scope(**NO_SIGNALS) as scope:
        await anyio.sleep(seconds)
        scope.request_shutdown("test over")
    return scope


@pytest.mark.parametrize("pid", [None, "own"])
async def test_watchdog_pings_every_half_period(
    manager: Manager,
    mock_clock: MockClock,
    monkeypatch: pytest.MonkeyPatch,
    pid: str | None,
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    if pid is not None:
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    async with manager.reading():
        await sleep_then_stop(9)
    pings = [t for t, message in manager.timed() if message == "WATCHDOG=1"]
    assert pings == [0, 2, 4, 6, 8]


async def test_no_pings_for_another_process(
    manager: Manager, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "20000")  # a ping each 10 ms
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    async with manager.reading():
        await sleep_then_stop(0.1)
    assert "WATCHDOG=1" not in manager.messages
    assert manager.messages[-1] == "STATUS=done: clean"


@pytest.mark.parametrize(
    ("variable", "value"),
    [("WATCHDOG_USEC", "soon"), ("WATCHDOG_USEC", "0"), ("WATCHDOG_PID", "-1")],
)
async def test_a_malformed_watchdog_variable_warns_once_and_sends_no_pings(
    manager: Manager,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    variable: str,
    value: str,
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "20000")
    monkeypatch.setenv(variable, value)
    async with manager.reading():
        await sleep_then_stop(0.1)
    assert "WATCHDOG=1" not in manager.messages
    assert manager.messages[-1] == "STATUS=done: clean"
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert f"{variable} must be a decimal integer" in warnings[0].getMessage()
    assert repr(value) in warnings[0].getMessage()


# -- one scope per process --------------------------------------------------------


async def test_a_nested_scope_sends_nothing(manager: Manager) -> None:
    async with graceful_scope(**NO_SIGNALS) as outer:
        await outer.start(idle)
        async with graceful_scope(**NO_SIGNALS) as inner:
            await inner.start(idle)
            inner.start_soon(stopper(inner, "inner done"))
            # returns with a service up: the inner scope would say READY
        assert inner.report.clean
        assert manager.messages == []
        outer.request_shutdown("outer done")
    assert without_extend(manager.messages) == [
        "STOPPING=1\nSTATUS=stopping: outer done",
        "STATUS=draining: nothing in flight",
        "STATUS=done: clean",
    ]


async def test_the_next_scope_notifies_again(manager: Manager) -> None:
    for reason in ("first", "second"):
        async with graceful_scope(**NO_SIGNALS) as scope:
            scope.request_shutdown(reason)
    assert without_extend(manager.messages) == [
        "STOPPING=1\nSTATUS=stopping: first",
        "STATUS=done: clean",
        "STOPPING=1\nSTATUS=stopping: second",
        "STATUS=done: clean",
    ]


# -- what child processes inherit -------------------------------------------------

_SHOW_ENVIRON = "import json, os; print(json.dumps(dict(os.environ)))"


@pytest.mark.subprocess
async def test_child_processes_of_a_scope_do_not_inherit_the_managers_variables(
    manager: Manager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A helper the app starts must not notify for it (nor take its generation)."""
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    monkeypatch.setenv("SHUTDOWN_SCOPE_GENERATION", "2")
    async with manager.reading(), graceful_scope(**NO_SIGNALS) as scope:
        child = await anyio.run_process([sys.executable, "-c", _SHOW_ENVIRON])
        # This process still reaches its manager.
        assert systemd.notify("STATUS=still told") is True
        scope.request_shutdown("deploy")
    inherited = json.loads(child.stdout)
    manager_variables = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
    assert [name for name in inherited if name in manager_variables] == []
    assert [name for name in inherited if name.startswith("SHUTDOWN_SCOPE_")] == []
    assert "PATH" in inherited  # the rest is passed on
    assert "STATUS=still told" in manager.messages
    assert "NOTIFY_SOCKET" not in os.environ
    assert manager.messages[-1] == "STATUS=done: clean"


async def test_without_systemd_notify_the_environment_is_left_alone(
    manager: Manager,
) -> None:
    async with graceful_scope(systemd_notify=False, **NO_SIGNALS) as scope:
        scope.request_shutdown("deploy")
    assert os.environ["NOTIFY_SOCKET"].startswith("@shutdown-scope-test-")


# -- failures -------------------------------------------------------------------


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "shutdown_scope" and r.levelno >= logging.WARNING
    ]


async def test_a_missing_socket_is_logged_once_and_the_scope_stays_clean(
    manager: Manager,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    missing = str(tmp_path / "gone.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", missing)
    monkeypatch.setenv("WATCHDOG_USEC", "20000")
    async with graceful_scope(**NO_SIGNALS) as scope:
        await scope.start(idle)
        scope.start_soon(stopper(scope, "deploy", 0.1))
    assert scope.report.clean
    assert scope.report.exit_code == 0
    [warning] = warnings_of(caplog)
    assert f"cannot notify NOTIFY_SOCKET={missing!r}" in warning
    assert "No such file or directory" in warning


async def test_a_socket_that_stops_reading_is_logged_once(
    manager: Manager, caplog: pytest.LogCaptureFixture
) -> None:
    async def hang_up(token: ShutdownToken) -> None:
        await anyio.sleep(0.01)
        manager.sock.shutdown(socket.SHUT_RD)  # sends now fail: EPIPE
        scope.request_shutdown("deploy")

    async with graceful_scope(**NO_SIGNALS) as scope:
        await scope.start(idle)
        scope.start_soon(hang_up)
    assert manager.messages == ["READY=1\nSTATUS=running"]
    assert scope.report.clean
    [warning] = warnings_of(caplog)
    assert "cannot notify NOTIFY_SOCKET='@shutdown-scope-test-" in warning
    assert "Broken pipe" in warning


async def test_a_bad_address_is_logged_once(
    manager: Manager,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    async with graceful_scope(**NO_SIGNALS) as scope:
        scope.request_shutdown("deploy")
    assert scope.report.clean
    [warning] = warnings_of(caplog)
    assert "NOTIFY_SOCKET must be an absolute path" in warning
    assert "'vsock:2:1234'" in warning


def fill(manager: Manager) -> None:
    """Fill the manager's queue: the next message would block."""
    fill_queue(manager.sock.getsockname())


async def test_a_full_queue_delays_messages_in_order(manager: Manager) -> None:
    fill(manager)

    async def make_room(token: ShutdownToken) -> None:
        await anyio.sleep(0.05)  # READY waits meanwhile
        assert set(manager.messages) == {"FILLER=1"}  # read: room for READY
        await anyio.sleep(0.05)
        scope.request_shutdown("deploy")

    async with graceful_scope(**NO_SIGNALS) as scope:
        await scope.start(idle)
        scope.start_soon(make_room)
    told = [m for m in manager.messages if m != "FILLER=1"]
    assert without_extend(told) == [
        "READY=1\nSTATUS=running",
        "STOPPING=1\nSTATUS=stopping: deploy",
        "STATUS=draining: nothing in flight",
        "STATUS=done: clean",
    ]


async def test_a_full_queue_holds_one_watchdog_ping(
    manager: Manager, mock_clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")  # a ping each second
    fill(manager)

    async def make_room(token: ShutdownToken) -> None:
        await anyio.sleep(4.5)  # five pings due meanwhile
        assert set(manager.messages) == {"FILLER=1"}
        await anyio.sleep(2)
        scope.request_shutdown("deploy")

    async with graceful_scope(**NO_SIGNALS) as scope:
        await scope.start(idle)
        scope.start_soon(make_room)
    told = [m for m in manager.messages if m != "FILLER=1"]
    # One ping waited for room (sent at 4.5: whichever of it and READY came
    # first at 0 goes first), then the pings at 5 and 6.
    assert told.count("WATCHDOG=1") == 3
    assert without_extend([m for m in told if m != "WATCHDOG=1"]) == [
        "READY=1\nSTATUS=running",
        "STOPPING=1\nSTATUS=stopping: deploy",
        "STATUS=draining: nothing in flight",
        "STATUS=done: clean",
    ]


# -- the option -----------------------------------------------------------------


async def test_systemd_notify_false_sends_nothing(
    manager: Manager, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "20000")
    async with graceful_scope(systemd_notify=False, **NO_SIGNALS) as scope:
        await scope.start(idle)
        scope.start_soon(stopper(scope, "deploy", 0.1))
    assert manager.messages == []


@pytest.mark.parametrize("value", [1, "yes", None])
async def test_systemd_notify_must_be_a_bool(value: object) -> None:
    with pytest.raises(TypeError, match="systemd_notify must be True or False"):
        async with graceful_scope(systemd_notify=value, **NO_SIGNALS):  # type: ignore[arg-type]
            pass
