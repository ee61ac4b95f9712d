"""hypercorn serve(): idle keep-alive connections, timed out by one clock."""

from __future__ import annotations

import asyncio
import gc
import socket
import struct
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio
import h2.config
import h2.connection
import pytest
import sniffio
from _asgi_clients import answer_lifespan
from _services import NO_SIGNALS
from hypercorn.asyncio.tcp_server import TCPServer as AsyncioTCPServer
from hypercorn.config import Config
from hypercorn.trio.tcp_server import TCPServer as TrioTCPServer

from shutdown_scope import graceful_scope
from shutdown_scope.hypercorn import serve

pytestmark = pytest.mark.anyio

Message = MutableMapping[str, Any]
REQUEST = b"GET /?ms=%d HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Real clocks: the clients are threads."""
    name: str = request.param
    return name


async def app(
    scope: Message,
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    """Answers ``/?ms=N`` after N milliseconds."""
    if scope["type"] == "lifespan":
        await answer_lifespan(receive, send)
        return
    await anyio.sleep(int(scope["query_string"].split(b"=")[1]) / 1000)
    headers = [(b"content-length", b"5")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"hello"})


def _config(keep_alive: float) -> Config:
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.keep_alive_timeout = keep_alive
    return config


def _address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def _open_idle(address: tuple[str, int], count: int) -> list[socket.socket]:
    """``count`` connections, each with one request answered and kept alive."""
    conns = [socket.create_connection(address, timeout=10) for _ in range(count)]
    for conn in conns:
        conn.sendall(REQUEST % 0)
    for conn in conns:
        assert _answer(conn).startswith(b"HTTP/1.1 200")
    return conns


def _answer(conn: socket.socket) -> bytes:
    """One whole answer (``hello``, with a Content-Length)."""
    received = b""
    while not received.endswith(b"hello"):
        chunk = conn.recv(65536)
        assert chunk, received
        received += chunk
    return received


def _read_to_eof(conn: socket.socket) -> bytes:
    received = b""
    while chunk := conn.recv(65536):
        received += chunk
    return received


def _tasks() -> int:
    """The tasks of the running event loop."""
    if sniffio.current_async_library() == "asyncio":
        return len(asyncio.all_tasks())
    import trio

    def count(task: trio.lowlevel.Task) -> int:
        return 1 + sum(count(t) for n in task.child_nurseries for t in n.child_tasks)

    root = trio.lowlevel.current_root_task()
    assert root is not None
    return count(root)


async def _settled_tasks() -> int:
    """The number of tasks, once it stays the same (the tasks that ran the
    requests end a moment after their answers)."""
    last = _tasks()
    for _ in range(100):
        await anyio.sleep(0.05)
        last, now = _tasks(), last
        if now == last:
            break
    return last


async def test_an_idle_connection_holds_one_task_whatever_their_number() -> None:
    # hypercorn gave each idle connection a task of its own waiting for its
    # keep-alive timeout (two on asyncio); the worker's one clock does it now.
    async with graceful_scope(**NO_SIGNALS) as scope:
        (url,) = await scope.start(serve, app, _config(keep_alive=60))
        address = _address(url)
        idle = await anyio.to_thread.run_sync(_open_idle, address, 5)
        with_5 = await _settled_tasks()
        idle += await anyio.to_thread.run_sync(_open_idle, address, 20)
        with_25 = await _settled_tasks()
        scope.request_shutdown("test over")
    for conn in idle:
        assert _read_to_eof(conn) == b""  # closed as idle at the drain
        conn.close()
    # Python 3.10: hypercorn's TaskGroup is the taskgroup backport, which runs
    # each connection's task inside a second one (install_uncancel); its own.
    backport = (
        sys.version_info < (3, 11) and sniffio.current_async_library() == "asyncio"
    )
    per_connection = 2 if backport else 1
    assert with_25 - with_5 == 20 * per_connection
    assert scope.report.clean


async def test_an_idle_connection_is_closed_after_keep_alive_timeout() -> None:
    async with graceful_scope(**NO_SIGNALS) as scope:
        (url,) = await scope.start(serve, app, _config(keep_alive=0.3))
        address = _address(url)

        def exchange() -> tuple[bytes, bytes]:
            with socket.create_connection(address, timeout=10) as conn:
                # Busy longer than the timeout: answered, not closed under it.
                conn.sendall(REQUEST % 600)
                answer = _answer(conn)
                # Then idle: closed, and the next request would go nowhere.
                return answer, _read_to_eof(conn)

        answer, after = await anyio.to_thread.run_sync(exchange)
        scope.request_shutdown("test over")
    assert answer.startswith(b"HTTP/1.1 200")
    assert answer.endswith(b"hello")
    assert after == b""
    assert scope.report.clean


def _still_open(conn: socket.socket) -> bool:
    """Nothing to read yet, and not closed by the server (does not wait)."""
    timeout = conn.gettimeout()
    conn.setblocking(False)
    try:
        conn.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    finally:
        conn.settimeout(timeout)
    return False


async def test_a_connection_busy_for_a_while_gets_its_whole_timeout_again() -> None:
    # One deadline per connection, kept in the order they turned idle: one
    # that was busy in between is closed a whole timeout after its answer,
    # and the one idle since before it is closed at its own time.
    async with graceful_scope(**NO_SIGNALS) as scope:
        (url,) = await scope.start(serve, app, _config(keep_alive=1.0))
        address = _address(url)

        def exchange() -> tuple[bool, bytes]:
            early, late = _open_idle(address, 2)
            with early, late:
                early.sendall(REQUEST % 600)  # busy: its timer stops
                assert _answer(early).startswith(b"HTTP/1.1 200")
                assert _read_to_eof(late) == b""  # closed 1 s after its answer
                early_open = _still_open(early)  # its timeout ends 0.6 s later
                return early_open, _read_to_eof(early)

        early_open, early_end = await anyio.to_thread.run_sync(exchange)
        scope.request_shutdown("test over")
    assert early_open
    assert early_end == b""
    assert scope.report.clean


async def test_a_keep_alive_timeout_of_0_leaves_an_idle_server_idle() -> None:
    # The clock with no idle connection waited one timeout and looked again:
    # with keep_alive_timeout 0 that was a busy loop (a whole core, idle).
    async with graceful_scope(**NO_SIGNALS) as scope:
        (url,) = await scope.start(serve, app, _config(keep_alive=0))
        address = _address(url)
        # A connection is still closed as idle at once (as hypercorn's 0 has it).
        with socket.create_connection(address, timeout=10) as conn:
            assert await anyio.to_thread.run_sync(_read_to_eof, conn) == b""
        cpu_before = time.process_time()
        await anyio.sleep(0.5)
        cpu_idle = time.process_time() - cpu_before
        scope.request_shutdown("test over")
    assert cpu_idle < 0.1
    assert scope.report.clean


def _answered_then_reset(address: tuple[str, int]) -> None:
    """A request answered, then the connection reset (not closed) by the client."""
    with socket.create_connection(address, timeout=10) as conn:
        conn.sendall(REQUEST % 0)
        assert _answer(conn).startswith(b"HTTP/1.1 200")
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _http2_gone_mid_request(address: tuple[str, int]) -> None:
    """An HTTP/2 request, and the client gone before its answer."""
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    headers = [(":method", "GET"), (":path", "/?ms=50"), (":scheme", "http")]
    client.send_headers(1, [*headers, (":authority", "x")], end_stream=True)
    with socket.create_connection(address, timeout=10) as conn:
        conn.sendall(client.data_to_send())
        assert conn.recv(65536)  # the server's SETTINGS: it is served


def _live_connections() -> int:
    """The per-connection servers (hypercorn's TCPServer) still in memory."""
    gc.collect()
    servers = (AsyncioTCPServer, TrioTCPServer)
    return sum(isinstance(o, servers) for o in gc.get_objects())


@pytest.mark.parametrize("client", [_answered_then_reset, _http2_gone_mid_request])
async def test_closed_connections_are_not_kept_until_their_timeout(
    client: Callable[[tuple[str, int]], None],
) -> None:
    # A connection whose reader ended and whose last response was done after
    # it (the client reset it, or left mid-request) turned idle once more:
    # on trio the clock kept it, and all it holds, for the keep-alive timeout.
    async with graceful_scope(**NO_SIGNALS) as scope:
        (url,) = await scope.start(serve, app, _config(keep_alive=3600))
        address = _address(url)
        for _ in range(20):
            await anyio.to_thread.run_sync(client, address)
        left = 20
        for _ in range(100):  # until every connection's task is done with it
            left = _live_connections()
            if left == 0:
                break
            await anyio.sleep(0.05)
        scope.request_shutdown("test over")
    assert left == 0
    assert scope.report.clean
