"""HTTP/2 under shutdown_scope.hypercorn.serve: no open stream is idle.

An HTTP/2 connection with no stream open is closed by GOAWAY once it has been
idle for ``keep_alive_timeout``, however it got there: only the preface sent,
an h2c upgrade whose request was answered, a stream reset by the client, or a
stream hypercorn refused by itself. hypercorn's HTTP/1.1 parser stops the idle
timer for the preface (it parses it as a request) and its HTTP/2 restarts it
only when a stream tells it has ended: such connections stayed open forever
(a client could hold file descriptors until the server ran out).

In process (to set the timeout), the client in a thread, on both workers.
The server closes the connection while the client waits: it was the timer,
since the drain begins only after the client is done.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import anyio.to_thread
import pytest
from _h2_client import H2Client, Stream
from _services import NO_SIGNALS
from hypercorn.config import Config

from shutdown_scope import graceful_scope
from shutdown_scope.hypercorn import serve

sys.path.insert(0, str(Path(__file__).parent.parent / "examples"))
import work_app

pytestmark = [
    pytest.mark.subprocess,  # a server and a client thread on real sockets
    pytest.mark.parametrize("backend", ["asyncio", "trio"]),
]

LAST_POSSIBLE = 2**31 - 1
KEEP_ALIVE = 0.3
# Far longer than KEEP_ALIVE plus the GOAWAY's round trip, on a loaded machine;
# reached only when the connection is never closed (the bug).
WAIT_FOR_CLOSE = 10.0
DONE = Stream(status=200, body=b"done 0\n", ended=True)


def _serve(
    exchange: Callable[[str], H2Client], backend: str, **settings: object
) -> H2Client:
    """Serve the work app while ``exchange(url)`` runs in a thread; its client."""
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.keep_alive_timeout = KEEP_ALIVE
    for name, value in settings.items():
        setattr(config, name, value)

    async def main() -> H2Client:
        async with graceful_scope(**NO_SIGNALS) as scope:
            (url,) = await scope.start(serve, work_app.App(), config)
            client = await anyio.to_thread.run_sync(exchange, url)
            scope.request_shutdown("test over")
        assert scope.report.clean
        return client

    return anyio.run(main, backend=backend)


def _wait_for_close(client: H2Client) -> None:
    client.read_until(lambda: False, timeout=WAIT_FOR_CLOSE)


def test_connection_with_the_preface_only_is_closed(backend: str) -> None:
    def exchange(url: str) -> H2Client:
        with H2Client(url) as client:
            client.read_until(lambda: client.settings_acked)
            _wait_for_close(client)
        return client

    client = _serve(exchange, backend)
    assert client.log == [("goaway", LAST_POSSIBLE), ("goaway", 0), ("eof", 0)]


def _read_more(client: H2Client) -> None:
    received = len(client.received)
    client.read_until(lambda: len(client.received) > received)


def test_pings_do_not_keep_an_idle_connection_open(backend: str) -> None:
    # The timer restarts when the last stream ends, not at every frame.
    def exchange(url: str) -> H2Client:
        with H2Client(url) as client:
            client.read_until(lambda: client.settings_acked)
            give_up = time.monotonic() + WAIT_FOR_CLOSE
            while not client.eof and time.monotonic() < give_up:
                client.h2.ping(b"stillup!")
                try:
                    client.send_raw(client.h2.data_to_send())
                except OSError:  # closed under the PING
                    _wait_for_close(client)
                    break
                _read_more(client)  # its answer, or the GOAWAY
                time.sleep(KEEP_ALIVE / 6)
        return client

    client = _serve(exchange, backend)
    assert client.goaways == [LAST_POSSIBLE, 0]
    assert client.eof


def test_upgraded_connection_is_closed_once_its_request_is_answered(
    backend: str,
) -> None:
    def exchange(url: str) -> H2Client:
        with H2Client(url, upgrade="/work?ms=0") as client:
            client.read_until(lambda: client.streams[1].ended)
            _wait_for_close(client)
        return client

    client = _serve(exchange, backend)
    assert client.streams[1] == DONE
    assert client.goaways == [LAST_POSSIBLE, 1]
    assert client.log[-1] == ("eof", 0)


def test_connection_whose_streams_ended_is_closed(backend: str) -> None:
    def exchange(url: str) -> H2Client:
        with H2Client(url) as client:
            first = client.request("/work?ms=0")
            second = client.request("/work?ms=100")
            client.read_until(lambda: client.streams[second].ended)
            assert client.streams[first] == DONE
            _wait_for_close(client)
        return client

    client = _serve(exchange, backend)
    assert client.streams[3] == Stream(status=200, body=b"done 100\n", ended=True)
    assert client.goaways == [LAST_POSSIBLE, 3]
    assert client.log[-1] == ("eof", 0)


def test_connection_whose_stream_was_reset_is_closed(backend: str) -> None:
    # The app ends after the reset, and hypercorn's stream then tells nothing.
    def exchange(url: str) -> H2Client:
        with H2Client(url, window=0) as client:  # the body waits for our window
            stream = client.request("/work?ms=0")
            client.read_until(lambda: client.streams[stream].status is not None)
            client.h2.reset_stream(stream)
            client.send_raw(client.h2.data_to_send())
            _wait_for_close(client)
        return client

    client = _serve(exchange, backend)
    assert client.goaways == [LAST_POSSIBLE, 1]
    assert client.log[-1] == ("eof", 0)


def _refused_server_name(client: H2Client) -> int:
    return client.request("/work?ms=0")  # :authority x, not served


def _refused_websocket(client: H2Client) -> int:
    # An extended CONNECT (RFC 8441) with no Sec-WebSocket-Version: a bad
    # handshake, answered 400 by hypercorn with no app.
    client.read_until(lambda: client.settings_acked)
    stream_id = client.h2.get_next_available_stream_id()
    headers = [
        (b":method", b"CONNECT"),
        (b":protocol", b"websocket"),
        (b":path", b"/ws"),
        (b":scheme", b"http"),
        (b":authority", b"served.example"),
    ]
    client.h2.send_headers(stream_id, headers)
    client.streams[stream_id] = Stream()
    client.send_raw(client.h2.data_to_send())
    return stream_id


@pytest.mark.parametrize(
    ("refuse", "status"), [(_refused_server_name, 404), (_refused_websocket, 400)]
)
def test_connection_whose_stream_hypercorn_refused_is_closed(
    backend: str, refuse: Callable[[H2Client], int], status: int
) -> None:
    # hypercorn answers the stream itself and marks it closed, but keeps it
    # among the open ones: the connection stayed busy, and its drain waited
    # for that stream until the deadline.
    def exchange(url: str) -> H2Client:
        with H2Client(url) as client:
            stream = refuse(client)
            client.read_until(lambda: client.streams[stream].status is not None)
            _wait_for_close(client)
        return client

    client = _serve(exchange, backend, server_names=["served.example"])
    assert client.streams[1].status == status
    assert client.goaways == [LAST_POSSIBLE, 1]
    assert client.log[-1] == ("eof", 0)
