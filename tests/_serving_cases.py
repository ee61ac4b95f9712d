"""What every HTTP server integration promises at SIGTERM, as cases over a ``Server``.

A ``Server`` runs one of the example apps (``examples/uvicorn_app.py``,
``examples/hypercorn_app.py``) as a child process; every case stops it with a
real SIGTERM and talks to it over real sockets with h11 and wsproto. The apps
share their routes (``/work``, ``/events``, ``/ws``, ``/readyz``), their lifespan
line (``lifespan: shutdown; /work requests: N read, M answered``) and their JSON
report as the last line.

``tests/test_uvicorn_serve.py`` runs these cases for ``shutdown_scope.uvicorn``;
the same behaviours of ``shutdown_scope.hypercorn`` are tested in
``tests/test_hypercorn.py``, whose tests can move onto these cases with
``HYPERCORN_ASYNCIO`` and ``HYPERCORN_TRIO``.
"""

from __future__ import annotations

import json
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import h11
import wsproto
import wsproto.events
from _spawn import Child

TESTS = Path(__file__).parent
EXAMPLES = TESTS.parent / "examples"
sys.path.insert(0, str(EXAMPLES))
from http_load import LoadStats, run_load  # noqa: E402

PAUSE_AT_DRAIN = str(TESTS / "_pause_at_drain.py")


@dataclass(frozen=True)
class Server:
    """An example app under one server integration, bound to a free port."""

    name: str
    argv: tuple[str, ...]
    bind_free_port: tuple[str, ...]

    @contextmanager
    def running(
        self, *options: str, paused_at_drain: bool = False
    ) -> Iterator[tuple[Child, str]]:
        """The app as a child process, with the URL it listens on.

        ``paused_at_drain``: its event loop stops when the drain begins, until
        the test sends SIGUSR1 (``tests/_pause_at_drain.py``).
        """
        wrapper = (PAUSE_AT_DRAIN,) if paused_at_drain else ()
        argv = (*wrapper, *self.argv, *self.bind_free_port, "--json", *options)
        with Child(*argv) as child:
            yield child, child.wait_for("listening http://").split()[-1]


UVICORN_H11, UVICORN_HTTPTOOLS = (
    Server(
        f"uvicorn-{http}",
        (str(EXAMPLES / "uvicorn_app.py"), "--http", http),
        ("--port", "0"),
    )
    for http in ("h11", "httptools")
)
HYPERCORN_ASYNCIO, HYPERCORN_TRIO = (
    Server(
        f"hypercorn-{backend}",
        (str(EXAMPLES / "hypercorn_app.py"), "--backend", backend),
        ("--bind", "127.0.0.1:0"),
    )
    for backend in ("asyncio", "trio")
)


# -- clients --------------------------------------------------------------------


def report_of(child: Child) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(child.lines[-1])
    return report


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=10)


def get(url: str, path: str, *, sock: socket.socket | None = None) -> h11.Response:
    """One request on ``sock`` (or a new connection); the response, body read."""
    own = sock is None
    if sock is None:
        sock = connect(url)
    try:
        conn = h11.Connection(h11.CLIENT)
        request = h11.Request(method="GET", target=path, headers=[("Host", "x")])
        sock.sendall(conn.send(request) + (conn.send(h11.EndOfMessage()) or b""))
        return read_response(sock, conn)[0]
    finally:
        if own:
            sock.close()


def read_response(
    sock: socket.socket, conn: h11.Connection | None = None
) -> tuple[h11.Response, bytes]:
    """The next whole response on ``sock``, with its body."""
    if conn is None:
        conn = h11.Connection(h11.CLIENT)
        conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
        conn.send(h11.EndOfMessage())
    response: h11.Response | None = None
    body = b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(sock.recv(65536))
        elif isinstance(event, h11.Response):
            response = event
        elif isinstance(event, h11.Data):
            body += bytes(event.data)
        elif isinstance(event, h11.EndOfMessage):
            assert response is not None
            return response, body
        elif isinstance(event, h11.ConnectionClosed):
            raise ConnectionError("closed before a whole response")


def header(response: h11.Response, name: bytes) -> bytes | None:
    return next((v for k, v in response.headers if k == name), None)


def ws_events(
    sock: socket.socket, ws: wsproto.WSConnection, until: type[wsproto.events.Event]
) -> list[wsproto.events.Event]:
    found: list[wsproto.events.Event] = []
    while not found or not isinstance(found[-1], until):
        data = sock.recv(65536)
        assert data, f"connection closed before {until.__name__}: {found}"
        ws.receive_data(data)
        found.extend(ws.events())
    return found


def lifespan_counts(child: Child) -> tuple[int, int]:
    """The ``/work`` requests the app read and answered, from its lifespan line."""
    words = child.lines[child.index("lifespan: shutdown")].split()
    return int(words[-4]), int(words[-2])


# -- the cases ------------------------------------------------------------------


def no_request_lost_under_load(server: Server) -> None:
    with server.running("--drain-timeout", "10") as (child, url):
        stats = LoadStats()

        async def load_then_signal() -> None:
            async with anyio.create_task_group() as tg:
                tg.start_soon(
                    lambda: run_load(
                        f"{url}/work?ms=5", clients=32, seconds=1.5, stats=stats
                    )
                )
                # Mid-load: once every client has had answers for a while.
                while stats.answered < 500:  # noqa: ASYNC110 -- polling our own counter
                    await anyio.sleep(0.01)
                child.send(signal.SIGTERM)

        anyio.run(load_then_signal)
        assert child.finish() == 0, child.output
        report = report_of(child)
    read, answered = lifespan_counts(child)
    assert stats.lost == 0, stats.summary()
    # Every request the app read was answered, and every answer reached a client.
    assert read == answered == stats.answered, (read, answered, stats.summary())
    assert set(stats.statuses) == {200}
    assert stats.closed_by_server > 0  # Connection: close once stopping
    assert stats.refused > 0  # the listener closed: new connections refused
    assert report["clean"] is True
    assert [p["phase"] for p in report["phases"]] == ["STOPPING", "DRAINING"]


def readiness_fails_during_the_announce_delay(server: Server) -> None:
    with server.running("--announce-delay", "2") as (child, url):
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
    assert header(ready, b"connection") == b"close"
    assert header(fresh, b"connection") == b"close"
    assert header(reused, b"connection") == b"close"


def request_begun_before_the_stop_answers_with_connection_close(
    server: Server,
) -> None:
    # Read while ready, answered once stopping: its response ends the
    # keep-alive connection (Connection: close, then the server closes it).
    with server.running("--announce-delay", "2", "--verbose") as (child, url):
        sock = connect(url)
        sock.sendall(b"GET /work?ms=1000 HTTP/1.1\r\nHost: x\r\n\r\n")
        child.wait_for("work: read ms=1000")
        child.send(signal.SIGTERM)
        child.wait_for("shutdown_scope: STOPPING")
        response, body = read_response(sock)
        answered_while_stopping = "shutdown_scope: DRAINING" not in child.output
        sock.settimeout(10)
        after = sock.recv(1)  # b"": closed by the server, nothing more sent
        sock.close()
        assert child.finish() == 0, child.output
    assert answered_while_stopping
    assert (response.status_code, body) == (200, b"done 1000\n")
    assert header(response, b"connection") == b"close"
    assert after == b""


def connections_in_the_accept_queue_are_served(server: Server) -> None:
    with server.running(paused_at_drain=True) as (child, url):
        child.send(signal.SIGTERM)
        child.wait_for("paused at drain")
        # The server's loop is stopped: these wait in the kernel's accept queue.
        queued = [connect(url) for _ in range(5)]
        for n, sock in enumerate(queued):
            sock.sendall(b"GET /work?ms=%d HTTP/1.1\r\nHost: x\r\n\r\n" % n)
        child.send(signal.SIGUSR1)
        answers = [read_response(sock) for sock in queued]
        for sock in queued:
            sock.close()
        assert child.finish() == 0, child.output
    assert [(r.status_code, body) for r, body in answers] == [
        (200, b"done %d\n" % n) for n in range(5)
    ]
    # Answered during the drain: each says its connection ends.
    assert {header(r, b"connection") for r, _ in answers} == {b"close"}
    assert report_of(child)["clean"] is True


def idle_connections_do_not_hold_the_drain(server: Server) -> None:
    with server.running("--drain-timeout", "60") as (child, url):
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
    service = next(s for s in report["services"] if s["name"] == "http")
    assert service["outcome"] == "returned"
    assert report["clean"] is True


def websocket_gets_going_away(server: Server) -> None:
    with server.running() as (child, url):
        sock = connect(url)
        ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        sock.sendall(ws.send(wsproto.events.Request(host="x", target="/ws")))
        ws_events(sock, ws, wsproto.events.AcceptConnection)
        sock.sendall(ws.send(wsproto.events.TextMessage(data="hi")))
        events = ws_events(sock, ws, wsproto.events.TextMessage)
        assert events[-1].data == "hi"  # type: ignore[attr-defined]
        child.send(signal.SIGTERM)
        events = ws_events(sock, ws, wsproto.events.CloseConnection)
        close = events[-1]
        assert isinstance(close, wsproto.events.CloseConnection)
        assert close.code == 1001
        sock.sendall(ws.send(close.response()))
        assert child.finish() == 0, child.output
        sock.close()
    assert "websocket: closed with" in child.output
    assert report_of(child)["clean"] is True


def event_stream_ends_with_a_last_event_at_the_drain(server: Server) -> None:
    with server.running("--drain-timeout", "60") as (child, url):
        sock = connect(url)
        conn = h11.Connection(h11.CLIENT)
        request = h11.Request(method="GET", target="/events", headers=[("Host", "x")])
        sock.sendall(conn.send(request) + (conn.send(h11.EndOfMessage()) or b""))
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
    service = next(s for s in report_of(child)["services"] if s["name"] == "http")
    assert service["outcome"] == "returned"


def request_past_the_drain_deadline_is_cancelled(server: Server) -> None:
    options = ("--drain-timeout", "0.3", "--cancel-timeout", "5", "--verbose")
    with server.running(*options) as (child, url):
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
    service = next(s for s in report["services"] if s["name"] == "http")
    assert service["outcome"] == "cancelled"
    assert "http: GET /work" in service["cancelled_in_flight"]
    # No "done": a server answers 500 for a cancelled app, or the connection
    # closes first.
    (answer,) = outcome
    assert isinstance(answer, Exception) or answer == 500, answer
    child.assert_in_order("shutdown_scope: CANCELLING", "lifespan: shutdown")
    # Reported by label, not logged as an error of the app: no traceback.
    assert "Traceback" not in child.output, child.output


def unanswered_websocket_close_does_not_hold_the_drain(server: Server) -> None:
    # A client that vanished never answers the close frame 1001: after a
    # quarter of the drain (at most 2 s), the connection is closed, long
    # before the drain deadline.
    with server.running("--drain-timeout", "4") as (child, url):
        sock = connect(url)
        ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        sock.sendall(ws.send(wsproto.events.Request(host="x", target="/ws")))
        ws_events(sock, ws, wsproto.events.AcceptConnection)
        child.send(signal.SIGTERM)
        events = ws_events(sock, ws, wsproto.events.CloseConnection)
        assert isinstance(events[-1], wsproto.events.CloseConnection)
        assert events[-1].code == 1001
        # No answer. The server closes the connection itself.
        while sock.recv(65536):
            pass
        assert child.finish() == 0, child.output
        sock.close()
    report = report_of(child)
    assert report["clean"] is True
    assert [p["phase"] for p in report["phases"]] == ["STOPPING", "DRAINING"]


def request_buffered_behind_a_response_begun_earlier_is_served(
    server: Server, stream: str = "/events"
) -> None:
    # The event stream's response began before the shutdown, so it carries no
    # Connection: close; the request pipelined behind it has reached the server
    # and must be answered once the stream ends at the drain.
    with server.running("--drain-timeout", "60") as (child, url):
        sock = connect(url)
        conn = h11.Connection(h11.CLIENT)
        requests = [
            h11.Request(method="GET", target=target, headers=[("Host", "x")])
            for target in (stream, "/work?ms=0")
        ]
        pipelined = conn.send(requests[0]) + (conn.send(h11.EndOfMessage()) or b"")
        # h11 sends one request per cycle: the second one's bytes by hand.
        sock.sendall(pipelined + b"GET /work?ms=0 HTTP/1.1\r\nhost: x\r\n\r\n")
        responses: list[tuple[h11.Response, bytes]] = []
        body = b""
        response: h11.Response | None = None
        signalled = False
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
                if b"tick 2" in body and not signalled:
                    child.send(signal.SIGTERM)
                    signalled = True
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


def keep_alive_response_begun_before_the_stop_ends_its_connection(
    server: Server,
) -> None:
    # A long response begun while RUNNING has no Connection: close; once it
    # ends during the drain, its idle connection is closed, not kept for a
    # next request that would hold the drain.
    with server.running("--drain-timeout", "60") as (child, url):
        sock = connect(url)
        sock.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        conn = h11.Connection(h11.CLIENT)
        conn.send(h11.Request(method="GET", target="/events", headers=[("Host", "x")]))
        conn.send(h11.EndOfMessage())
        signalled = False
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(sock.recv(65536))
            elif isinstance(event, h11.Data):
                if not signalled:
                    child.send(signal.SIGTERM)
                    signalled = True
            elif isinstance(event, h11.EndOfMessage):
                break
        assert sock.recv(1) == b""  # closed by the server, idle
        sock.close()
        assert child.finish() == 0, child.output
    assert report_of(child)["clean"] is True


def request_buffered_behind_a_stream_that_ends_late_is_served(server: Server) -> None:
    # The same, with a stream that takes 300 ms into the drain to end: the
    # server must not decide at the start of the drain that the connection
    # ends with that response.
    request_buffered_behind_a_response_begun_earlier_is_served(
        server, "/events?bye_after_ms=300"
    )


def websocket_opened_while_stopping_has_no_connection_close(server: Server) -> None:
    # Once stopping, HTTP responses carry Connection: close; a websocket
    # handshake must not (its Connection is Upgrade), whether its connection
    # was open before the stop or opened after it.
    upgrade = (
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
        b"Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    with server.running("--announce-delay", "2") as (child, url):
        before = connect(url)
        assert get(url, "/work?ms=0").status_code == 200  # `before` is accepted
        child.send(signal.SIGTERM)
        child.wait_for("shutdown_scope: STOPPING")
        after = connect(url)
        heads = []
        for sock in (before, after):
            sock.sendall(upgrade)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = sock.recv(4096)
                assert chunk, head
                head += chunk
            heads.append(head.split(b"\r\n\r\n")[0].lower())
        answered_while_stopping = "shutdown_scope: DRAINING" not in child.output
        for sock in (before, after):
            sock.close()
        assert child.finish() == 0, child.output
    assert answered_while_stopping
    for head in heads:
        assert head.startswith(b"http/1.1 101 "), head
        connection = [
            line for line in head.split(b"\r\n") if line.startswith(b"connection:")
        ]
        assert connection == [b"connection: upgrade"], head


# The cases every server of serve() runs (tests/test_hypercorn.py,
# tests/test_uvicorn_serve.py), in this order.
EVERY_SERVER = (
    readiness_fails_during_the_announce_delay,
    request_begun_before_the_stop_answers_with_connection_close,
    connections_in_the_accept_queue_are_served,
    idle_connections_do_not_hold_the_drain,
    websocket_gets_going_away,
    unanswered_websocket_close_does_not_hold_the_drain,
    event_stream_ends_with_a_last_event_at_the_drain,
    request_past_the_drain_deadline_is_cancelled,
    request_buffered_behind_a_response_begun_earlier_is_served,
    request_buffered_behind_a_stream_that_ends_late_is_served,
    keep_alive_response_begun_before_the_stop_ends_its_connection,
    websocket_opened_while_stopping_has_no_connection_close,
)
