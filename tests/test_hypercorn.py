"""shutdown_scope.hypercorn.serve: a real hypercorn app, real signals, real clients.

Every test runs examples/hypercorn_app.py as a child process on both of
hypercorn's workers (asyncio and trio) and stops it with a real SIGTERM.
"""

from __future__ import annotations

import json
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h11
import pytest
import wsproto
import wsproto.events
from _spawn import Child

from shutdown_scope import Phase
from shutdown_scope.testing import Rehearsal

EXAMPLES = Path(__file__).parent.parent / "examples"

APP = str(EXAMPLES / "hypercorn_app.py")

pytestmark = [
    pytest.mark.subprocess,
    pytest.mark.parametrize("backend", ["asyncio", "trio"]),
]


@contextmanager
def running_app(backend: str, *options: str) -> Iterator[tuple[Child, str]]:
    """The example app as a child process, with the URL it listens on."""
    with Child(
        APP, "--backend", backend, "--bind", "127.0.0.1:0", "--json", *options
    ) as child:
        yield child, child.wait_for("listening http://").split()[-1]


def report_of(child: Child) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(child.lines[-1])
    return report


def get(url: str, path: str, *, sock: socket.socket | None = None) -> h11.Response:
    """One request on ``sock`` (or a new connection); the response with its body."""
    own = sock is None
    if sock is None:
        sock = connect(url)
    try:
        conn = h11.Connection(h11.CLIENT)
        request = h11.Request(method="GET", target=path, headers=[("Host", "x")])
        sock.sendall(conn.send(request) + (conn.send(h11.EndOfMessage()) or b""))
        response: h11.Response | None = None
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(sock.recv(65536))
            elif isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.EndOfMessage):
                assert response is not None
                return response
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("closed before a whole response")
    finally:
        if own:
            sock.close()


def header(response: h11.Response, name: bytes) -> bytes | None:
    return next((v for k, v in response.headers if k == name), None)


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=10)


def test_no_request_lost_under_load(
    backend: str, shutdown_rehearsal: Callable[..., Rehearsal]
) -> None:
    rehearsal = shutdown_rehearsal(
        [sys.executable, APP, "--backend", backend, "--bind", "127.0.0.1:{port}"],
        url="http://127.0.0.1:{port}/work?ms=5",
        clients=32,
        signal_after=0.3,  # mid-load: every client has had answers for a while
    )
    assert rehearsal.lost == 0, rehearsal
    # Every request the app read was answered, and every answer reached a client.
    counts = "lifespan: shutdown; /work requests: {0} read, {0} answered"
    assert counts.format(rehearsal.answered) in rehearsal.output, rehearsal
    assert set(rehearsal.statuses) == {200}
    assert rehearsal.closed_by_server > 0  # Connection: close once stopping
    assert rehearsal.refused > 0  # the listener closed: new connections refused
    assert rehearsal.exit_code == 0
    report = rehearsal.report
    assert report.clean
    assert [p.phase for p in report.phases] == [Phase.STOPPING, Phase.DRAINING]


def test_request_past_the_drain_deadline_is_cancelled(backend: str) -> None:
    options = ("--drain-timeout", "0.3", "--cancel-timeout", "5", "--verbose")
    with running_app(backend, *options) as (child, url):
        sock = connect(url)
        outcome: list[object] = []

        def slow_request() -> None:
            try:
                outcome.append(get(url, "/work?ms=60000", sock=sock).status_code)
            except (OSError, h11.RemoteProtocolError) as error:
                outcome.append(error)

        client = threading.Thread(target=slow_request)
        client.start()
        child.wait_for("work: read ms=60000")
        child.send(signal.SIGTERM)
        code = child.finish()
        client.join()
        sock.close()
    # 1: work was cancelled; not 143: the scope ended it, not the watchdog.
    assert code == 1, child.output
    report = report_of(child)
    assert [p["phase"] for p in report["phases"]] == [
        "STOPPING",
        "DRAINING",
        "CANCELLING",
    ]
    (service,) = report["services"]
    assert service["outcome"] == "cancelled"
    assert "http: GET /work" in service["cancelled_in_flight"]
    # No "done": hypercorn answers 500 for a cancelled app, or the
    # connection closes first.
    (answer,) = outcome
    assert isinstance(answer, Exception) or answer == 500, answer
    child.assert_in_order("shutdown_scope: CANCELLING", "lifespan: shutdown")


def test_readiness_fails_during_the_announce_delay(backend: str) -> None:
    with running_app(backend, "--announce-delay", "2") as (child, url):
        before = get(url, "/readyz")
        kept = connect(url)
        assert get(url, "/work?ms=0", sock=kept).status_code == 200
        child.send(signal.SIGTERM)
        child.wait_for("shutdown_scope: STOPPING")
        ready = get(url, "/readyz")
        # Still serving, on a new connection and on a kept-alive one ...
        fresh = get(url, "/work?ms=0")
        reused = get(url, "/work?ms=0", sock=kept)
        # ... and still STOPPING when those answers came.
        assert "shutdown_scope: DRAINING" not in child.output
        kept.close()
        assert child.finish() == 0, child.output
    assert before.status_code == 200
    assert ready.status_code == 503
    assert fresh.status_code == reused.status_code == 200
    assert header(before, b"connection") is None
    assert header(fresh, b"connection") == b"close"
    assert header(reused, b"connection") == b"close"


def test_idle_connections_do_not_hold_the_drain(backend: str) -> None:
    with running_app(backend, "--drain-timeout", "60") as (child, url):
        kept_alive = connect(url)
        assert get(url, "/work?ms=0", sock=kept_alive).status_code == 200
        never_used = connect(url)
        half_header = connect(url)
        half_header.sendall(b"GET /work?ms=0 HTTP/1.1\r\nHost: x")
        get(url, "/work?ms=0")  # all three are accepted by now
        child.send(signal.SIGTERM)
        assert child.finish() == 0, child.output
        # The server closed each of them.
        for sock in (kept_alive, never_used, half_header):
            assert sock.recv(1) == b""
            sock.close()
    report = report_of(child)
    (service,) = report["services"]
    assert service["outcome"] == "returned"
    assert report["clean"] is True


def test_websocket_gets_going_away(backend: str) -> None:
    with running_app(backend) as (child, url):
        sock = connect(url)
        ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        sock.sendall(ws.send(wsproto.events.Request(host="x", target="/ws")))
        events = _ws_events(sock, ws, wsproto.events.AcceptConnection)
        sock.sendall(ws.send(wsproto.events.TextMessage(data="hi")))
        events = _ws_events(sock, ws, wsproto.events.TextMessage)
        assert events[-1].data == "hi"  # type: ignore[attr-defined]
        child.send(signal.SIGTERM)
        events = _ws_events(sock, ws, wsproto.events.CloseConnection)
        close = events[-1]
        assert isinstance(close, wsproto.events.CloseConnection)
        assert close.code == 1001
        sock.sendall(ws.send(close.response()))
        assert child.finish() == 0, child.output
        sock.close()
    # hypercorn tells the app 1000 once the close handshake it began is done.
    assert "websocket: closed with" in child.output


def _ws_events(
    sock: socket.socket, ws: wsproto.WSConnection, until: type[wsproto.events.Event]
) -> list[wsproto.events.Event]:
    found: list[wsproto.events.Event] = []
    while not found or not isinstance(found[-1], until):
        data = sock.recv(65536)
        assert data, f"connection closed before {until.__name__}: {found}"
        ws.receive_data(data)
        found.extend(ws.events())
    return found


def test_event_stream_ends_with_a_last_event_at_the_drain(backend: str) -> None:
    with running_app(backend, "--drain-timeout", "60") as (child, url):
        sock = connect(url)
        sock.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        conn = h11.Connection(h11.CLIENT)
        body = b""
        signalled = False
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(sock.recv(65536))
            elif isinstance(event, h11.Data):
                body += bytes(event.data)
                if b"tick 2" in body and not signalled:
                    child.send(signal.SIGTERM)
                    signalled = True
            elif isinstance(event, h11.EndOfMessage):
                break
        sock.close()
        assert child.finish() == 0, child.output
    # Ended by the app itself when the drain began, not cut at the deadline.
    assert body.endswith(b"event: bye\ndata: server shutting down\n\n")
    (service,) = report_of(child)["services"]
    assert service["outcome"] == "returned"


def test_a_request_buffered_behind_a_response_begun_earlier_is_served(
    backend: str,
) -> None:
    # The event stream's response began before the shutdown, so it carries no
    # Connection: close; the request pipelined behind it has reached the server
    # and must be answered once the stream ends at the drain.
    with running_app(backend, "--drain-timeout", "60") as (child, url):
        sock = connect(url)
        conn = h11.Connection(h11.CLIENT)
        requests = [
            h11.Request(method="GET", target=target, headers=[("Host", "x")])
            for target in ("/events", "/work?ms=0")
        ]
        pipelined = conn.send(requests[0]) + (conn.send(h11.EndOfMessage()) or b"")
        # h11 sends one request per cycle: the second one's bytes by hand.
        sock.sendall(pipelined + b"GET /work?ms=0 HTTP/1.1\r\nhost: x\r\n\r\n")
        responses: list[tuple[h11.Response, bytes]] = []
        body = b""
        response: h11.Response | None = None
        while len(responses) < 2:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = sock.recv(65536)
                assert data, f"closed after {len(responses)} response(s)"
                conn.receive_data(data)
            elif isinstance(event, h11.Response):
                response, body = event, b""
            elif isinstance(event, h11.Data):
                body += bytes(event.data)
                if b"tick 2" in body and not responses:
                    child.send(signal.SIGTERM)
            elif isinstance(event, h11.EndOfMessage):
                assert response is not None
                responses.append((response, body))
                if len(responses) == 1:
                    conn.start_next_cycle()
                    conn.send(requests[1])  # already sent: moves h11's state only
                    conn.send(h11.EndOfMessage())
        sock.close()
        assert child.finish() == 0, child.output
    (events, first_body), (work, work_body) = responses
    assert header(events, b"connection") is None
    assert first_body.endswith(b"event: bye\ndata: server shutting down\n\n")
    assert work.status_code == 200
    assert work_body == b"done 0\n"
    assert header(work, b"connection") == b"close"
