"""Shared fixtures: every ``@pytest.mark.anyio`` test runs on asyncio and on trio.

On trio the test runs under a fresh ``MockClock(autojump_threshold=0)``: time is
virtual and jumps ahead whenever every task is blocked, so ``await anyio.sleep(100)``
returns at once with ``anyio.current_time()`` exactly 100 s later. asyncio has no
virtual clock, so a test that asserts exact virtual times requests ``mock_clock``;
that makes it a trio-only test (see ``pytest_generate_tests``).
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Literal, TypeAlias

import pytest
from trio.testing import MockClock

from shutdown_scope import _manager_environ
from shutdown_scope._sd_notify import MANAGER_VARIABLES

if TYPE_CHECKING:
    from collections.abc import Iterator

BackendName: TypeAlias = Literal["asyncio", "trio"]
Backend: TypeAlias = tuple[BackendName, dict[str, object]]

_BACKENDS: list[BackendName] = ["asyncio", "trio"]


@pytest.hookimpl(tryfirst=True)
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run a test that requests ``mock_clock`` on trio only.

    Runs before pytest's own hooks, so the parametrize mark added here replaces
    the fixture's params; a test that parametrizes ``anyio_backend`` itself is
    left alone.
    """
    if "mock_clock" not in metafunc.fixturenames:
        return
    for mark in metafunc.definition.iter_markers("parametrize"):
        argnames = mark.args[0] if mark.args else mark.kwargs.get("argnames", ())
        if isinstance(argnames, str):
            argnames = argnames.replace(" ", "").split(",")
        if "anyio_backend" in argnames:
            return
    metafunc.definition.add_marker(
        pytest.mark.parametrize("anyio_backend", ["trio"], indirect=True)
    )


# Function scope on purpose: a MockClock keeps its virtual time, so one shared
# between tests would leak time from one test into the next. anyio's plugin starts
# a new event loop for each test that uses a function-scoped anyio_backend.
@pytest.fixture(params=_BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> Backend:
    """Name the anyio backend and its options: asyncio in debug mode, or trio.

    On trio, a new ``MockClock`` for this test only.
    """
    name: BackendName = request.param
    if name == "trio":
        return "trio", {"clock": MockClock(autojump_threshold=0)}
    return "asyncio", {"debug": True}


@pytest.fixture
def mock_clock(anyio_backend: Backend) -> MockClock:
    """The virtual clock of this (trio-only) test, for exact time assertions."""
    name, options = anyio_backend
    clock = options.get("clock")
    if name != "trio" or not isinstance(clock, MockClock):
        msg = (
            "mock_clock needs the trio backend with a MockClock; do not"
            f" parametrize anyio_backend to {anyio_backend!r} in a test that uses it"
        )
        raise RuntimeError(msg)
    return clock


class _NoSlowCallbackLogs(logging.Filter):
    # asyncio's debug mode logs every callback slower than 0.1 s; on a loaded CI
    # machine that is noise in the logs that tests assert on.
    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != "Executing %s took %.3f seconds"


@pytest.fixture(scope="session", autouse=True)
def _quiet_asyncio_debug() -> Iterator[None]:
    log_filter = _NoSlowCallbackLogs()
    logger = logging.getLogger("asyncio")
    logger.addFilter(log_filter)
    yield
    logger.removeFilter(log_filter)


@pytest.fixture(scope="session", autouse=True)
def _not_under_a_service_manager() -> Iterator[None]:
    """Run as if no systemd or launcher started pytest.

    Under a unit with NOTIFY_SOCKET (or inherited LISTEN_FDS), every scope a test
    opens would notify the real manager, and children would inherit it.
    """
    saved = {
        name: os.environ.pop(name) for name in MANAGER_VARIABLES if name in os.environ
    }
    yield
    os.environ.update(saved)


@pytest.fixture(autouse=True)
def _forget_taken_notify_variables() -> Iterator[None]:
    """A scope takes NOTIFY_SOCKET out of os.environ and keeps it for the process;
    each test sets its own (monkeypatch), so none may see an earlier test's."""
    yield
    with _manager_environ._TAKEN_LOCK:
        _manager_environ._TAKEN.clear()


@pytest.fixture(autouse=True)
def _processes_only_when_marked(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A test not marked ``subprocess`` that starts a process fails, saying so.

    ``-m "not subprocess"`` is the seconds-long inner loop, and CI runs only
    those tests on some Pythons: a process started there is a mistake of marks.
    """
    if request.node.get_closest_marker("subprocess") is not None:
        return
    import subprocess

    def refuse(*_args: object, **_kwargs: object) -> None:
        msg = (
            f"{request.node.nodeid} starts a process: mark it"
            " @pytest.mark.subprocess (or keep it in-process)"
        )
        raise RuntimeError(msg)

    monkeypatch.setattr(subprocess.Popen, "_execute_child", refuse)
    for name in ("fork", "forkpty", "posix_spawn", "posix_spawnp", "system"):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, refuse)
