"""shutdown_scope.uvicorn.serve's connections: no task each, reset at the deadline.

In process, on asyncio (uvicorn's loop), with real sockets; the behaviours at
SIGTERM shared with hypercorn are in tests/_serving_cases.py.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio
import pytest
import uvicorn
from _asgi_clients import answer_lifespan
from _services import NO_SIGNALS

from shutdown_scope import graceful_scope
from shutdown_scope.uvicorn import serve

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

pytestmark = pytest.mark.anyio
IDLE_CONNECTIONS = 20
CHUNK = b"x" * 65536


@pytest.fixture
def anyio_backend() -> str:
    """Asyncio: uvicorn's loop (real clocks: the clients are real sockets)."""
    return "asyncio"


async def app(scope: Message, receive: Receive, send: Send) -> None:
    """``/`` answers ``hello``; ``/endless`` streams until it is cancelled."""
    if scope["type"] == "lifespan":
        await answer_lifespan(receive, send)
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    if scope["path"] == "/endless":
        while True:
            await send({"type": "http.response.body", "body": CHUNK, "more_body": True})
    await send({"type": "http.response.body", "body": b"hello"})


def config() -> uvicorn.Config:
    return uvicorn.Config(app, log_config=None, port=0, timeout_keep_alive=60)


def address_of(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


async def test_idle_connections_hold_no_task_each_and_close_at_the_drain() -> None:
    async with graceful_scope(**NO_SIGNALS) as scope:
        (url,) = await scope.start(serve, app, config())
        await anyio.wait_all_tasks_blocked()
        tasks_before = len(asyncio.all_tasks())
        clients = []
        for _ in range(IDLE_CONNECTIONS):
            client = await anyio.connect_tcp(*address_of(url))
            await client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await client.receive()).startswith(b"HTTP/1.1 200")
            clients.append(client)
        await anyio.wait_all_tasks_blocked()
        # The event loop serves an idle connection: no task of its own.
        assert len(asyncio.all_tasks()) <= tasks_before
        scope.request_shutdown("test over")
    assert scope.report.clean
    for client in clients:  # each closed by the server at the drain
        with pytest.raises(anyio.EndOfStream):
            await client.receive()
        await client.aclose()


async def test_a_client_that_stops_reading_is_reset_at_the_deadline() -> None:
    with socket.socket() as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        client.settimeout(10)
        async with graceful_scope(
            **NO_SIGNALS, drain_timeout=0.3, cancel_timeout=1
        ) as scope:
            (url,) = await scope.start(serve, app, config(), name="http")
            client.connect(address_of(url))  # the kernel's accept queue answers
            client.sendall(b"GET /endless HTTP/1.1\r\nHost: x\r\n\r\n")
            scope.request_shutdown("test over")
        (http,) = scope.report.services
        assert http.outcome == "cancelled"
        assert "http: GET /endless" in http.cancelled_in_flight
        # Reset, not held open by the kernel with the bytes it could not send.
        with pytest.raises(ConnectionResetError):
            while await anyio.to_thread.run_sync(client.recv, 1 << 20):
                pass
