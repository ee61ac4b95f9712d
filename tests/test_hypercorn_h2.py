"""HTTP/2 under shutdown_scope.hypercorn.serve: drained by GOAWAY (RFC 9113, 6.8).

Every test runs examples/hypercorn_app.py as a child process on both of
hypercorn's workers, talks cleartext HTTP/2 to it (tests/_h2_client.py: prior
knowledge, or an ``Upgrade: h2c`` request) and stops it with a real SIGTERM.
A stream is kept in flight without timing: the client opens no flow-control
window for it, so the app's response waits in its last ``send``.
"""

from __future__ import annotations

import json
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import h2.config
import h2.connection
import httpx
import pytest
from _h2_client import H2Client, Stream
from _services import NO_SIGNALS
from _spawn import Child
from h2.events import ConnectionTerminated, PingReceived
from hypercorn.config import Config
from hyperframe.frame import PriorityFrame

from shutdown_scope import graceful_scope
from shutdown_scope.hypercorn import serve

EXAMPLES = Path(__file__).parent.parent / "examples"
sys.path.insert(0, str(EXAMPLES))
import work_app  # noqa: E402

APP = str(EXAMPLES / "hypercorn_app.py")
LAST_POSSIBLE = 2**31 - 1
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
EMPTY_SETTINGS = bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])  # length 0, type 4, stream 0
DONE = Stream(status=200, body=b"done 0\n", ended=True)

pytestmark = [
    pytest.mark.subprocess,
    pytest.mark.parametrize("backend", ["asyncio", "trio"]),
]


@contextmanager
def running_app(backend: str, *options: str) -> Iterator[tuple[Child, str]]:
    """The example app as a child process, with the URL it listens on."""
    argv = ["--backend", backend, "--bind", "127.0.0.1:0", "--json", "--verbose"]
    with Child(APP, *argv, *options) as child:
        yield child, child.wait_for("listening http://").split()[-1]


def assert_drained_cleanly(child: Child) -> dict[str, Any]:
    """Exit 0, and the drain was not cut: no CANCELLING phase."""
    code = child.finish()
    assert code == 0, child.output
    report: dict[str, Any] = json.loads(child.lines[-1])
    assert report["clean"] is True
    assert [p["phase"] for p in report["phases"]] == ["STOPPING", "DRAINING"]
    return report


def app_counts(child: Child) -> tuple[int, int]:
    """The app's /work requests (read, answered), from its lifespan shutdown."""
    words = child.lines[child.index("lifespan: shutdown")].split()
    return int(words[-4]), int(words[-2])


def test_busy_connection_gets_goaway_first_and_its_streams_finish(
    backend: str,
) -> None:
    with running_app(backend, "--drain-timeout", "60") as (child, url):
        with H2Client(url, window=0) as client:
            first = client.request("/work?ms=0")
            client.read_until(lambda: client.streams[first].status is not None)
            # The client has not read the first GOAWAY yet when it opens a stream:
            # served, since the final GOAWAY comes after its PING's answer.
            client.hold_answers()
            child.send(signal.SIGTERM)
            client.read_until(lambda: client.goaways == [LAST_POSSIBLE])
            crossed = client.request("/work?ms=0")
            client.release()
            client.read_until(lambda: len(client.goaways) == 2)
            late = client.request("/work?ms=0")  # after the final GOAWAY
            client.open_window(first)
            client.open_window(crossed)
            client.read_to_the_end()
        assert_drained_cleanly(child)
    assert client.goaways == [LAST_POSSIBLE, crossed]
    assert client.streams[first] == DONE
    assert client.streams[crossed] == DONE
    # Ignored, as the GOAWAY says (RFC 9113, 6.8): the client may retry it.
    assert client.streams[late] == Stream()
    # The drain began with a GOAWAY, not with the end of the streams.
    log = client.log
    assert log.index(("goaway", LAST_POSSIBLE)) < log.index(("end", first))
    assert log[-1] == ("eof", 0)
    assert app_counts(child) == (2, 2)


def test_idle_connection_gets_goaway_and_is_closed(backend: str) -> None:
    with running_app(backend, "--drain-timeout", "60") as (child, url):
        with H2Client(url) as client:
            client.read_until(lambda: client.settings_acked)
            child.send(signal.SIGTERM)
            client.read_to_the_end()
        assert_drained_cleanly(child)
    assert client.log == [("goaway", LAST_POSSIBLE), ("goaway", 0), ("eof", 0)]
    # A client on the h2 library takes no frame but a GOAWAY after a GOAWAY:
    # the PING came first, so it reads them all.
    plain = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    plain.initiate_connection()
    events = plain.receive_data(client.received)
    drain = [e for e in events if isinstance(e, (PingReceived, ConnectionTerminated))]
    assert [type(e) for e in drain] == [
        PingReceived,
        ConnectionTerminated,
        ConnectionTerminated,
    ]


def test_silent_idle_client_does_not_hold_the_drain(backend: str) -> None:
    # It never answers the PING, never reads, never closes.
    with running_app(backend, "--drain-timeout", "60") as (child, url):
        host, port = url.removeprefix("http://").rsplit(":", 1)
        sock = socket.create_connection((host, int(port)), timeout=20)
        sock.sendall(PREFACE + EMPTY_SETTINGS)
        assert sock.recv(9)  # the server's SETTINGS: it speaks HTTP/2 now
        child.send(signal.SIGTERM)
        assert_drained_cleanly(child)
        received = b""
        while data := sock.recv(65536):
            received += data
        sock.close()
    assert received  # GOAWAY frames, then the end


def test_streaming_response_of_a_client_gone_does_not_hold_the_drain(
    backend: str,
) -> None:
    with running_app(backend, "--drain-timeout", "10") as (child, url):
        with H2Client(url) as client:
            events = client.request("/events")
            client.read_until(lambda: b"tick 2" in client.streams[events].body)
        child.send(signal.SIGTERM)  # the client has gone
        assert_drained_cleanly(child)


def test_response_waiting_for_a_client_gone_does_not_hold_the_drain(
    backend: str,
) -> None:
    with running_app(backend, "--drain-timeout", "10") as (child, url):
        with H2Client(url, window=0) as client:  # the body waits for our window
            stream = client.request("/work?ms=0")
            client.read_until(lambda: client.streams[stream].status is not None)
        child.send(signal.SIGTERM)  # the client has gone
        assert_drained_cleanly(child)
    assert app_counts(child) == (1, 1)


def _minor(distribution: str) -> tuple[int, int]:
    major, minor, *_ = metadata.version(distribution).split(".")
    return int(major), int(minor)


# `nox -s hypercorn_versions` runs this file on hypercorn 0.17 too.
@pytest.mark.xfail(
    _minor("hypercorn") < (0, 18) and _minor("h2") >= (4, 2),
    reason="hypercorn 0.17 itself fails every `Upgrade: h2c` with h2 >= 4.2",
)
def test_upgraded_connection_is_drained_like_the_others(backend: str) -> None:
    with running_app(backend, "--drain-timeout", "60") as (child, url):
        with H2Client(url, upgrade="/work?ms=0", window=0) as client:
            client.read_until(lambda: client.streams[1].status is not None)
            child.send(signal.SIGTERM)
            client.read_until(lambda: len(client.goaways) == 2)
            late = client.request("/work?ms=0")
            client.open_window(1)
            client.read_to_the_end()
        assert_drained_cleanly(child)
    assert client.goaways == [LAST_POSSIBLE, 1]
    assert client.streams[1] == DONE
    assert client.streams[late] == Stream()
    assert client.log[-1] == ("eof", 0)


def test_request_body_after_the_response_is_ignored(backend: str) -> None:
    # The app answers without reading the body; the rest of the body arrives
    # after the response (allowed: RFC 9113, 8.1). It once ended the server.
    with running_app(backend) as (child, url), H2Client(url) as client:
        first = client.request("/work?ms=0", method="POST", end=False)
        client.read_until(lambda: client.streams[first].ended)
        client.send_data(first, b"x" * 1000, end=True)
        # Or the client resets the stream it no longer needs a body for.
        second = client.request("/work?ms=0", method="POST", end=False)
        client.read_until(lambda: client.streams[second].ended)
        client.h2.reset_stream(second)
        client.send_raw(client.h2.data_to_send())
        third = client.request("/work?ms=0")
        client.read_until(lambda: client.streams[third].ended)
        child.send(signal.SIGTERM)
        client.read_to_the_end()
        assert_drained_cleanly(child)
    assert client.streams[first] == client.streams[third] == DONE


def test_priority_frames_for_many_idle_streams_are_ignored(backend: str) -> None:
    # hypercorn's priority tree holds 1000 streams; it once ended the server.
    with running_app(backend) as (child, url), H2Client(url, window=0) as client:
        held = client.request("/work?ms=0")  # open until its window opens
        client.read_until(lambda: client.streams[held].status is not None)
        flood = [
            PriorityFrame(stream_id=n, depends_on=n + 2, stream_weight=15)
            for n in range(101, 101 + 2 * 1200, 2)
        ]
        # For an open stream: kept (its parent is the connection).
        kept = PriorityFrame(stream_id=held, depends_on=0, stream_weight=200)
        client.send_raw(b"".join(f.serialize() for f in [*flood, kept]))
        client.open_window(held)
        client.read_until(lambda: client.streams[held].ended)
        stream = client.request("/work?ms=0")
        client.open_window(stream)
        client.read_until(lambda: client.streams[stream].ended)
        child.send(signal.SIGTERM)
        client.read_to_the_end()
        assert_drained_cleanly(child)
    assert client.streams[held] == client.streams[stream] == DONE


async def _httpx_load(
    url: str, child: Child, statuses: list[int | str], *, workers: int = 4
) -> None:
    """Requests by httpx (http2) until just after STOPPING begins; the drain
    begins later (``--announce-delay``): none of them is in flight at the GOAWAY."""
    stopping = anyio.Event()

    async def watch() -> None:
        await anyio.to_thread.run_sync(child.wait_for, "shutdown_scope: STOPPING")
        await anyio.sleep(0.3)  # requests go on during STOPPING
        stopping.set()

    async with httpx.AsyncClient(http1=False, http2=True, timeout=20) as client:

        async def worker() -> None:
            while not stopping.is_set():
                await _get(client, f"{url}/work?ms=10", statuses)

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            for _ in range(workers):
                tg.start_soon(worker)
            while len(statuses) < 20:  # noqa: ASYNC110 -- polling our own list
                await anyio.sleep(0.01)
            child.send(signal.SIGTERM)
        # The client's pooled connection stays open, idle, into the drain.
        await anyio.to_thread.run_sync(child.wait_for, "shutdown_scope: DRAINING")
        await anyio.to_thread.run_sync(child.finish)


def test_httpx_requests_before_the_drain_are_answered(backend: str) -> None:
    statuses: list[int | str] = []
    options = ("--announce-delay", "2", "--drain-timeout", "10")
    with running_app(backend, *options) as (child, url):
        anyio.run(_httpx_load, url, child, statuses)
        assert_drained_cleanly(child)  # the idle pooled connection did not hold it
    assert set(statuses) == {200}, statuses
    read, answered = app_counts(child)
    assert read == answered == len(statuses)


def test_httpx_request_in_flight_at_the_goaway(backend: str) -> None:
    statuses: list[int | str] = []

    async def one_in_flight(url: str, child: Child) -> None:
        async with (
            httpx.AsyncClient(http1=False, http2=True, timeout=20) as client,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(_get, client, f"{url}/work?ms=500", statuses)
            await anyio.to_thread.run_sync(child.wait_for, "work: read")
            child.send(signal.SIGTERM)

    with running_app(backend, "--drain-timeout", "10") as (child, url):
        anyio.run(one_in_flight, url, child)
        assert_drained_cleanly(child)
    assert app_counts(child) == (1, 1)  # answered, to the END_STREAM
    if statuses != [200]:
        # httpcore (on h2 4.x) takes no frame but GOAWAY after a GOAWAY, so it
        # fails every request in flight when a drain begins (nginx's too).
        (failure,) = statuses
        assert isinstance(failure, str)
        assert failure.startswith("RemoteProtocolError("), failure
        assert "ConnectionTerminated error_code:0, last_stream_id:2147483647" in failure
        pytest.xfail("httpx fails requests in flight on GOAWAY: encode/httpcore#46")


async def _get(client: httpx.AsyncClient, url: str, statuses: list[int | str]) -> None:
    try:
        response = await client.get(url)
    except httpx.HTTPError as error:
        statuses.append(repr(error))
    else:
        statuses.append(response.status_code)


def test_plain_connect_is_answered_501(backend: str) -> None:
    # A CONNECT without :path (a tunnel, RFC 9113, 8.5) once ended the server.
    with running_app(backend) as (child, url):
        with H2Client(url) as client:
            tunnel = client.request("example.com:443", method="CONNECT")
            client.read_until(lambda: client.streams[tunnel].ended)
            stream = client.request("/work?ms=0")
            client.read_until(lambda: client.streams[stream].ended)
            child.send(signal.SIGTERM)
            client.read_to_the_end()
        assert_drained_cleanly(child)
    assert client.streams[tunnel] == Stream(status=501, ended=True)
    assert client.streams[stream] == DONE


def _config(**settings: float) -> Config:
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    for name, value in settings.items():
        setattr(config, name, value)
    return config


async def _serve_for(exchange: Callable[[str], H2Client], config: Config) -> H2Client:
    """Serve the work app in process while ``exchange(url)`` runs in a thread."""
    async with graceful_scope(**NO_SIGNALS) as scope:
        (url,) = await scope.start(serve, work_app.App(), config)
        client = await anyio.to_thread.run_sync(exchange, url)
        scope.request_shutdown("test over")
    assert scope.report.clean
    return client


def test_idle_connection_at_keep_alive_timeout_is_closed_by_goaway(
    backend: str,
) -> None:
    # hypercorn closed it without a GOAWAY. In process, to set the timeout.
    def exchange(url: str) -> H2Client:
        with H2Client(url) as client:
            stream = client.request("/work?ms=0")
            client.read_to_the_end()  # idle from here on
        assert client.streams[stream] == DONE
        return client

    config = _config(keep_alive_timeout=0.2)
    client = anyio.run(_serve_for, exchange, config, backend=backend)
    assert client.goaways == [LAST_POSSIBLE, 1]
    assert client.log[-1] == ("eof", 0)


def test_last_request_of_a_connection_ends_it_by_goaway(backend: str) -> None:
    # At keep_alive_max_requests, hypercorn closed the connection with h2 at
    # once: the responses still due were cut. In process, to set the limit.
    config = _config(keep_alive_max_requests=1)

    def exchange(url: str) -> H2Client:
        with H2Client(url, window=0) as client:
            first = client.request("/work?ms=0")
            client.request("/work?ms=0")  # above the limit: the last one
            client.read_until(lambda: len(client.goaways) == 2)
            client.open_window(first)
            client.open_window(first + 2)
            client.read_to_the_end()
        return client

    client = anyio.run(_serve_for, exchange, config, backend=backend)
    assert client.goaways == [LAST_POSSIBLE, 3]
    assert client.streams[1] == client.streams[3] == DONE
    assert client.log[-1] == ("eof", 0)


def test_stream_reset_by_the_client_does_not_hold_the_drain(backend: str) -> None:
    with running_app(backend, "--drain-timeout", "10") as (child, url):
        with H2Client(url, window=0) as client:  # the body waits for our window
            stream = client.request("/work?ms=0")
            client.read_until(lambda: client.streams[stream].status is not None)
            client.h2.reset_stream(stream)
            client.send_raw(client.h2.data_to_send())
            child.send(signal.SIGTERM)
            client.read_to_the_end()
        assert_drained_cleanly(child)
    assert app_counts(child) == (1, 1)
    assert client.goaways == [LAST_POSSIBLE, stream]


def test_a_flood_of_streams_reset_at_once_breaks_nothing(backend: str) -> None:
    # Rapid reset (the pattern of CVE-2023-44487): HEADERS then RST_STREAM,
    # more than a thousand times, in one write. hypercorn keeps each reset
    # stream in its priority tree until its sender runs, and the tree refuses
    # its 1001st stream with an error that ended the connection: the stream
    # in flight was cut (500 without END_STREAM) and, on asyncio, its app
    # stayed blocked in its last send, so the stop ended in the hard exit.
    with running_app(backend, "--drain-timeout", "10") as (child, url):
        with H2Client(url, window=0) as client:  # the body waits for our window
            client.read_until(lambda: client.settings_acked)
            kept = client.request("/work?ms=0")
            client.read_until(lambda: client.streams[kept].status is not None)
            for _ in range(1100):
                stream = client.h2.get_next_available_stream_id()
                headers = [
                    (b":method", b"GET"),
                    (b":path", b"/nothing"),
                    (b":scheme", b"http"),
                    (b":authority", b"x"),
                ]
                client.h2.send_headers(stream, headers, end_stream=True)
                client.h2.reset_stream(stream)
            client.send_raw(client.h2.data_to_send())
            client.open_window(kept)
            client.read_until(lambda: client.streams[kept].ended)
            child.send(signal.SIGTERM)
            client.read_to_the_end()
        assert_drained_cleanly(child)
    assert client.streams[kept] == DONE
    assert app_counts(child) == (1, 1)
