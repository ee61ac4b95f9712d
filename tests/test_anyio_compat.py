"""A task spawned without anyio's TaskHandle: as cheap as before 4.14, same semantics.

If a new anyio changes the internals ``_anyio_compat`` relies on, it falls back
to ``start_soon`` (correct, but the per-connection cost is back) and the first
test here fails, to tell.
"""

from __future__ import annotations

import gc
import sys

import anyio
import anyio.abc
import pytest
from anyio.lowlevel import checkpoint

from shutdown_scope._anyio_compat import spawn_unhandled, spawns_unhandled

if sys.version_info < (3, 11):
    from exceptiongroup import ExceptionGroup

pytestmark = pytest.mark.anyio


def _task_handles() -> int:
    handle_type = getattr(anyio, "TaskHandle", None)
    if handle_type is None:  # anyio < 4.14: there is none to skip
        return 0
    gc.collect()
    return sum(isinstance(o, handle_type) for o in gc.get_objects())


def _spawn(group: anyio.abc.TaskGroup, fn: object, *args: object) -> None:
    spawn_unhandled(group, fn, *args, name="t", unhandled=spawns_unhandled(group))  # type: ignore[arg-type]


async def test_no_task_handle_is_made() -> None:
    release = anyio.Event()
    async with anyio.create_task_group() as group:
        assert spawns_unhandled(group)
        before = _task_handles()
        for _ in range(10):
            _spawn(group, release.wait)
        await checkpoint()
        during = _task_handles()
        release.set()
    assert during == before


async def test_the_group_waits_for_its_tasks() -> None:
    done: list[int] = []

    async def work(n: int) -> None:
        await anyio.sleep(n / 100)
        done.append(n)

    async with anyio.create_task_group() as group:
        for n in (3, 1, 2):
            _spawn(group, work, n)
    assert sorted(done) == [1, 2, 3]


async def test_an_error_cancels_the_others_and_propagates() -> None:
    cancelled: list[str] = []

    async def fail() -> None:
        await anyio.sleep(0.01)
        raise KeyError("boom")

    async def wait() -> None:
        try:
            await anyio.sleep(60)
        except anyio.get_cancelled_exc_class():
            cancelled.append("waiter")
            raise

    with pytest.raises(ExceptionGroup) as caught:
        async with anyio.create_task_group() as group:
            _spawn(group, wait)
            _spawn(group, fail)
    assert caught.group_contains(KeyError, match="boom")
    assert cancelled == ["waiter"]


async def test_a_deadline_cancels_the_tasks_but_not_their_shields() -> None:
    events: list[str] = []

    async def serve() -> None:
        try:
            await anyio.sleep(60)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.sleep(0.05)  # a shielded close: not cut
                events.append("closed")

    with anyio.move_on_after(0.05) as deadline:
        async with anyio.create_task_group() as group:
            _spawn(group, serve)
            _spawn(group, serve)
    assert deadline.cancelled_caught
    assert events == ["closed", "closed"]


async def test_a_task_spawned_once_cancelled_is_cancelled_too() -> None:
    # The accept loop takes the queue after the deadline: those tasks end too.
    reached: list[str] = []

    async def serve() -> None:
        reached.append("started")
        await anyio.sleep(60)
        reached.append("not cancelled")

    async with anyio.create_task_group() as group:
        group.cancel_scope.cancel()
        _spawn(group, serve)
    assert "not cancelled" not in reached


async def test_spawning_into_a_group_that_is_over_is_refused() -> None:
    async with anyio.create_task_group() as group:
        pass
    with pytest.raises(RuntimeError):
        _spawn(group, anyio.sleep, 1)


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager tasks: Python 3.12+")
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_with_eager_tasks_a_task_is_in_its_group_when_it_first_runs() -> None:
    import asyncio

    from anyio._backends._asyncio import _task_states

    loop = asyncio.get_running_loop()
    loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined,unused-ignore]
    in_group: list[bool] = []

    async def first_step() -> None:
        in_group.append(asyncio.current_task() in _task_states)
        await checkpoint()

    try:
        async with anyio.create_task_group() as group:
            _spawn(group, first_step)
            assert in_group == []  # not run eagerly, inside the spawn
    finally:
        loop.set_task_factory(None)
    assert in_group == [True]
