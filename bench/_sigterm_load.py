"""SIGTERM a server while a load runs against it: the part bench/drain.py's
HTTP/1.1 and HTTP/2 (``bench/h2_drain.py``) measurements share.

The load goes on until the server has exited; the result holds the load's
stats, the times from SIGTERM and from the last answer to the exit, and the
app's own count of the requests it read and answered.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Generic, Protocol, TypeVar

import anyio
import anyio.to_thread

__all__ = ["SignalledServer", "Stopped", "sigterm_under_load"]


class SignalledServer(Protocol):
    """A running server child process the bench can SIGTERM."""

    name: str
    url: str
    killed: bool

    def signal_and_wait(self) -> tuple[float, float]: ...

    def counts(self) -> tuple[int, int] | None: ...

    @property
    def exit_code(self) -> int: ...


class _LoadStats(Protocol):
    @property
    def answered(self) -> int: ...

    @property
    def last_answer(self) -> float: ...


StatsT = TypeVar("StatsT", bound=_LoadStats)


@dataclasses.dataclass
class Stopped(Generic[StatsT]):
    """What one server did with a SIGTERM under load."""

    stats: StatsT
    answered_before: int  # answers the clients had got when the signal was sent
    term_to_exit_ms: float
    last_answer_to_exit_ms: float
    exit_code: int
    killed: bool
    counts: tuple[int, int] | None  # the app's (read, answered)

    @property
    def unanswered(self) -> int | None:
        """Requests the server read minus those whose answer reached a client."""
        return None if self.counts is None else self.counts[0] - self.stats.answered


async def sigterm_under_load(
    server: SignalledServer,
    signal_after: float,
    stats: StatsT,
    load: Callable[[Callable[[], bool]], Awaitable[object]],
) -> Stopped[StatsT]:
    """Run ``load(while_)`` (it fills ``stats``); SIGTERM the server meanwhile.

    ``load`` goes on while ``while_()`` is true: until the server has exited.
    """
    times: dict[str, float] = {}

    async def stop() -> None:
        await anyio.sleep(signal_after)
        times["answered_before"] = stats.answered
        times["sent"], times["exited"] = await anyio.to_thread.run_sync(
            server.signal_and_wait
        )

    async with anyio.create_task_group() as tg:
        tg.start_soon(stop)
        await load(lambda: "exited" not in times)
    return Stopped(
        stats=stats,
        answered_before=int(times["answered_before"]),
        term_to_exit_ms=(times["exited"] - times["sent"]) * 1000,
        last_answer_to_exit_ms=(times["exited"] - stats.last_answer) * 1000,
        exit_code=server.exit_code,
        killed=server.killed,
        counts=server.counts(),
    )
