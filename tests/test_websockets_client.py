"""The ``websockets`` library's own client against our servers' ``/ws`` echo.

The example apps (``tests/_serving_cases.py``'s servers: ``shutdown_scope.uvicorn``
and ``shutdown_scope.hypercorn`` on asyncio and Trio) are stopped with a real
SIGTERM while a ``websockets`` client is connected. A client that reads sees
the close 1001 (going away) and answers it, and the server exits 0 within the
drain; a client that stopped reading never answers the close (its receive
queue is full, so the library reads nothing more), and the server closes the
connection itself without waiting for the drain deadline.
"""

from __future__ import annotations

import asyncio
import importlib.util
import signal

import pytest
from _serving_cases import (
    HYPERCORN_ASYNCIO,
    HYPERCORN_TRIO,
    UVICORN_H11,
    Server,
    report_of,
)

websockets = pytest.importorskip(
    "websockets", reason="needs the websockets library (the test extra)"
)
from websockets.asyncio.client import connect  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402
from websockets.protocol import State  # noqa: E402

pytestmark = pytest.mark.subprocess

SERVERS = [
    pytest.param(HYPERCORN_ASYNCIO, id="hypercorn-asyncio"),
    pytest.param(HYPERCORN_TRIO, id="hypercorn-trio"),
    pytest.param(
        UVICORN_H11,
        id="uvicorn",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("uvicorn") is None, reason="needs uvicorn"
        ),
    ),
]


def ws_url(url: str) -> str:
    return url.replace("http://", "ws://", 1) + "/ws"


@pytest.mark.parametrize("server", SERVERS)
def test_a_websockets_client_sees_going_away_and_the_server_exits_0(
    server: Server,
) -> None:
    with server.running("--drain-timeout", "10") as (child, url):

        async def talk() -> int | None:
            async with connect(ws_url(url), open_timeout=10) as ws:
                await ws.send("hi")
                assert await asyncio.wait_for(ws.recv(), 10) == "hi"
                child.send(signal.SIGTERM)
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 10)
                # The library answered the close: the handshake completed.
                assert ws.protocol.close_sent is not None
                return None if ws.close_code is None else ws.close_code

        code = asyncio.run(talk())
        assert code == 1001, child.output
        assert child.finish() == 0, child.output
    report = report_of(child)
    assert report["clean"] is True, child.output
    assert [p["phase"] for p in report["phases"]] == ["STOPPING", "DRAINING"]


@pytest.mark.parametrize("server", SERVERS)
def test_a_websockets_client_that_stopped_reading_does_not_hold_the_drain(
    server: Server,
) -> None:
    # A quarter of the drain (1 s) for the close handshake; then the server
    # closes the connection, long before the 4 s drain deadline.
    with server.running("--drain-timeout", "4") as (child, url):

        async def stall() -> None:
            # max_queue=1: once one unread message is queued, the library
            # stops reading the socket, so it never sees the close frame.
            async with connect(ws_url(url), open_timeout=10, max_queue=1) as ws:
                for n in range(4):
                    await ws.send(f"echo {n}")
                await asyncio.sleep(0.3)  # the echoes come back, unread
                child.send(signal.SIGTERM)
                code = await asyncio.to_thread(child.finish)
                assert code == 0, child.output
                # Still OPEN: the client never read, so never answered, the close.
                assert ws.protocol.state is State.OPEN
                assert ws.protocol.close_rcvd is None
                ws.transport.abort()

        asyncio.run(stall())
    report = report_of(child)
    assert report["clean"] is True, child.output
    # Ended within the drain: nothing was left to cancel.
    assert [p["phase"] for p in report["phases"]] == ["STOPPING", "DRAINING"]
