"""token.take(stream): items until the stop begins; none lost, none repeated."""

from __future__ import annotations

import anyio
import pytest
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream
from trio.testing import MockClock

from shutdown_scope import Phase, ShutdownToken, graceful_scope

pytestmark = pytest.mark.anyio


async def drain_into(
    token: ShutdownToken, receive: MemoryObjectReceiveStream[int], got: list[int]
) -> None:
    async for item in token.take(receive):
        with token.in_flight(f"item {item}"):
            got.append(item)


async def test_items_until_stopping_then_the_loop_ends() -> None:
    send, receive = anyio.create_memory_object_stream[int](10)
    got: list[int] = []
    with send, receive:
        async with graceful_scope(signals=(), hard_exit=False) as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(drain_into, scope.token, receive, got)
                for n in (1, 2, 3):
                    await send.send(n)
                await anyio.wait_all_tasks_blocked()
                assert got == [1, 2, 3]
                scope.request_shutdown()  # the consumer is waiting: it stops
            send.send_nowait(4)
        assert receive.receive_nowait() == 4  # not taken: still in the stream
    assert got == [1, 2, 3]
    assert scope.report.clean


@pytest.mark.parametrize("order", ["send, then stop", "stop, then send"])
async def test_an_item_sent_as_the_stop_begins_is_neither_lost_nor_repeated(
    order: str,
) -> None:
    """The item handed to the waiting receive in the same step as the stop is
    yielded (it was taken); sent just after the stop, it stays in the stream."""
    send, receive = anyio.create_memory_object_stream[int](10)
    got: list[int] = []
    with send, receive:
        async with (
            graceful_scope(signals=(), hard_exit=False) as scope,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(drain_into, scope.token, receive, got)
            await send.send(1)
            await anyio.wait_all_tasks_blocked()  # waiting for item 2
            send_first = order == "send, then stop"
            if send_first:
                send.send_nowait(2)
                scope.request_shutdown()
            else:
                scope.request_shutdown()
                send.send_nowait(2)
        left = receive.receive_nowait() if not send_first else None
        with pytest.raises(anyio.WouldBlock):
            receive.receive_nowait()
    if send_first:
        assert got == [1, 2]
    else:
        assert (got, left) == ([1], 2)


async def test_a_stop_reached_before_the_loop_receives_nothing() -> None:
    send, receive = anyio.create_memory_object_stream[int](10)
    with send, receive:
        send.send_nowait(1)
        async with graceful_scope(signals=(), hard_exit=False) as scope:
            scope.request_shutdown()
            with anyio.CancelScope() as cancelled:  # the end is a checkpoint
                cancelled.cancel()
                async for _ in scope.token.take(receive):
                    pytest.fail("took an item after the stop")
            assert cancelled.cancelled_caught
            async for _ in scope.token.take(receive):
                pytest.fail("took an item after the stop")
        assert receive.receive_nowait() == 1


async def test_the_loop_ends_when_the_senders_close() -> None:
    send, receive = anyio.create_memory_object_stream[int](10)
    with receive:
        async with graceful_scope(signals=(), hard_exit=False) as scope:
            with send:
                send.send_nowait(1)
            assert [n async for n in scope.token.take(receive)] == [1]
            assert scope.token.phase == Phase.RUNNING


@pytest.mark.parametrize("anyio_backend", ["trio"], indirect=True)
async def test_a_trio_channel_too() -> None:
    import trio

    send, receive = trio.open_memory_channel[int](10)
    got: list[int] = []
    async with graceful_scope(signals=(), hard_exit=False) as scope:
        async with send, receive, anyio.create_task_group() as tg:

            async def take_all() -> None:
                got.extend([n async for n in scope.token.take(receive)])

            tg.start_soon(take_all)
            send.send_nowait(1)
            await anyio.wait_all_tasks_blocked()
            send.send_nowait(2)
            scope.request_shutdown()
        assert got == [1, 2]
    send2, receive2 = trio.open_memory_channel[int](1)
    async with graceful_scope(signals=(), hard_exit=False) as scope, receive2:
        await send2.aclose()
        assert [n async for n in scope.token.take(receive2)] == []


async def test_until_draining_takes_during_the_announce_delay(
    mock_clock: MockClock,
) -> None:
    send, receive = anyio.create_memory_object_stream[float](10)
    got: list[tuple[float, float]] = []

    async def service(token: ShutdownToken, *, task_status: TaskStatus[None]) -> None:
        task_status.started()
        taken = token.take(receive, until=Phase.DRAINING)
        got.extend([(sent_at, anyio.current_time()) async for sent_at in taken])
        got.append((-1, anyio.current_time()))

    with send, receive:
        async with graceful_scope(
            announce_delay=5, signals=(), hard_exit=False
        ) as scope:
            await scope.start(service)
            scope.request_shutdown()
            for _ in range(2):
                await anyio.sleep(2)
                send.send_nowait(anyio.current_time())
    assert got == [(2, 2), (4, 4), (-1, 5)]
    assert scope.report.clean


async def test_misuse_is_one_clear_error() -> None:
    async with graceful_scope(signals=(), hard_exit=False) as scope:
        token = scope.token
        with pytest.raises(TypeError, match=r"async receive\(\) method.*not list"):
            token.take([1, 2])  # type: ignore[arg-type]
        send, receive = anyio.create_memory_object_stream[int](1)
        with send, receive:
            for bad in (Phase.RUNNING, "DRAINING", 99):
                with pytest.raises(ValueError, match="Phase after RUNNING"):
                    token.take(receive, until=bad)  # type: ignore[arg-type]
