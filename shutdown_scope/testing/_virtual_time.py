"""Virtual time on both backends: trio's MockClock, and its twin for asyncio."""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable
from typing import Literal

from shutdown_scope._extras import missing_extra

__all__ = ["VirtualClockLoop", "virtual_clock_backend"]


class _JumpingSelector(selectors.DefaultSelector):
    """Where the loop would sleep until its next timer, it jumps there instead."""

    def __init__(self, jump: Callable[[float], None]) -> None:
        super().__init__()
        self._jump = jump

    def select(
        self, timeout: float | None = None
    ) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None or timeout <= 0:
            # Nothing scheduled (wait for I/O or another thread), or work ready.
            return super().select(timeout)
        ready: list[tuple[selectors.SelectorKey, int]] = super().select(0)
        if not ready:
            self._jump(timeout)
        return ready


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An asyncio event loop on virtual time: asyncio's twin of trio's
    ``MockClock(autojump_threshold=0)``.

    Its clock starts at 0 and stands still while tasks run; whenever every task
    waits and no I/O is ready, it jumps to the next timer. ``await
    anyio.sleep(100)`` returns at once with ``anyio.current_time()`` 100 later.
    As with trio's autojump, a wait for another thread or for I/O that is not
    ready yet lets the clock jump to the next deadline first.
    """

    def __init__(self) -> None:
        self._now = 0.0
        super().__init__(_JumpingSelector(self._jump))

    def _jump(self, seconds: float) -> None:
        self._now += seconds

    def time(self) -> float:
        """The virtual time."""
        return self._now


def virtual_clock_backend(
    name: Literal["asyncio", "trio"],
) -> tuple[str, dict[str, object]]:
    """An ``anyio_backend`` value that runs on virtual time.

    For pytest::

        @pytest.fixture(params=["asyncio", "trio"])
        def anyio_backend(request):
            return virtual_clock_backend(request.param)

    Call it once per test (as a fixture does): each call makes a new clock.

    Raises:
        ValueError: not ``"asyncio"`` or ``"trio"``.
    """
    if name == "asyncio":
        return "asyncio", {"loop_factory": VirtualClockLoop}
    if name == "trio":
        try:
            from trio.testing import MockClock
        except ModuleNotFoundError as error:
            raise missing_extra(error, "trio") from error

        return "trio", {"clock": MockClock(autojump_threshold=0)}
    msg = f"backend must be 'asyncio' or 'trio', not {name!r}"
    raise ValueError(msg)
