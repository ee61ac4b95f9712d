"""The reader grace that connections closing as idle at the drain share."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from shutdown_scope._hypercorn_workers import _READER_ROUNDS, _ReaderGrace

pytestmark = pytest.mark.anyio


class _Rounds:
    """Counts rounds of the scheduler (one checkpoint each), until cancelled.

    Its step and a waiter's may run in either order within a round (trio
    shuffles them): a count may be one short of the rounds that passed.
    """

    def __init__(self) -> None:
        self.count = 0

    async def run(self) -> None:
        while True:
            await anyio.lowlevel.checkpoint()
            self.count += 1


async def test_every_caller_gets_its_rounds_even_joining_late() -> None:
    grace = _ReaderGrace()
    rounds = _Rounds()
    waited: dict[str, int] = {}

    async def wait(name: str) -> None:
        start = rounds.count
        await grace.wait()
        waited[name] = rounds.count - start

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(rounds.run)
        await anyio.lowlevel.checkpoint()
        tasks.start_soon(wait, "first")
        while rounds.count < _READER_ROUNDS // 2:
            await anyio.lowlevel.checkpoint()
        tasks.start_soon(wait, "late")
        while len(waited) < 2:
            await anyio.lowlevel.checkpoint()
        tasks.cancel_scope.cancel()
    assert waited["first"] >= _READER_ROUNDS - 1
    assert waited["late"] >= _READER_ROUNDS - 1


async def test_a_grace_over_is_begun_anew() -> None:
    grace = _ReaderGrace()
    rounds = _Rounds()
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(rounds.run)
        await anyio.lowlevel.checkpoint()
        for _ in range(2):
            start = rounds.count
            await grace.wait()
            assert rounds.count - start >= _READER_ROUNDS - 1
        tasks.cancel_scope.cancel()
