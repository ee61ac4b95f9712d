"""shutdown_scope.hypercorn.serve against clients that misbehave at shutdown.

Each test runs tests/_hypercorn_child.py (a ``db`` service started first, then
the HTTP server) as a child process on both of hypercorn's workers, sends it a
real SIGTERM while a client misbehaves, and reads the exit code, the events the
app printed and the report (JSON). No case may reach the watchdog's hard exit
(143): the request is cancelled at the drain deadline, and the ASGI lifespan
shutdown and the earlier service's cleanup still run.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.settings
import pytest
import wsproto
import wsproto.events
from _spawn import Child

CHILD = str(Path(__file__).parent / "_hypercorn_child.py")
# Far more than the kernel buffers on both sides hold (a few MiB on loopback).
BIG_MB = "32"

pytestmark = [
    pytest.mark.subprocess,
    pytest.mark.parametrize("backend", ["asyncio", "trio"]),
]


@contextmanager
def serving(backend: str, *options: str) -> Iterator[tuple[Child, tuple[str, int]]]:
    """The child, serving, with its address."""
    with Child(CHILD, "--backend", backend, *options) as child:
        url = child.wait_for("listening http://").split()[-1]
        host, port = url.removeprefix("http://").rsplit(":", 1)
        yield child, (host, int(port))


def report_of(child: Child) -> dict[str, Any]:
    line = child.lines[child.index("REPORT ")]
    report: dict[str, Any] = json.loads(line.split(" ", 1)[1])
    return report


def services(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {service["name"]: service for service in report["services"]}


def not_reading(address: tuple[str, int]) -> socket.socket:
    """A client socket with a tiny receive buffer, which it will never read."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    sock.settimeout(10)
    sock.connect(address)
    return sock


def assert_reset(sock: socket.socket) -> None:
    """The server reset the connection (RST), rather than waiting on us."""
    with pytest.raises(ConnectionResetError):
        while sock.recv(1 << 20):
            pass


def assert_cancelled_at_the_deadline(child: Child, label: str) -> None:
    """Exit code 1 from the scope (not the watchdog), ``label`` reported as
    cancelled, and the lifespan shutdown and the db's cleanup ran, in order."""
    code = child.finish()
    assert code == 1, child.output
    assert "watchdog" not in child.output
    report = report_of(child)
    assert [p["phase"] for p in report["phases"]] == [
        "STOPPING",
        "DRAINING",
        "CANCELLING",
    ]
    found = services(report)
    assert found["http"]["outcome"] == "cancelled", found
    assert label in found["http"]["cancelled_in_flight"]
    assert found["db"]["outcome"] == "stopped"
    child.assert_in_order(
        "shutdown_scope: CANCELLING", "lifespan: shutdown done", "db: closed"
    )


def test_a_client_that_stops_reading_is_reset_at_the_deadline(backend: str) -> None:
    with (
        serving(backend, "--drain", "0.5") as (child, address),
        not_reading(address) as sock,
    ):
        sock.sendall(f"GET /big?mb={BIG_MB} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        child.wait_for("app: sending big")
        child.send(signal.SIGTERM)
        assert_cancelled_at_the_deadline(child, "http: GET /big")
        assert_reset(sock)
    assert "app: big sent" not in child.output  # it was stuck, not slow


def test_a_unix_socket_client_that_stops_reading_is_cut(
    backend: str, tmp_path: Path
) -> None:
    path = str(tmp_path / "http.sock")
    with (
        Child(
            CHILD, "--backend", backend, "--drain", "0.5", "--bind", f"unix:{path}"
        ) as child,
        socket.socket(socket.AF_UNIX) as sock,
    ):
        child.wait_for("listening http://")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        sock.settimeout(10)
        sock.connect(path)
        sock.sendall(f"GET /big?mb={BIG_MB} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        child.wait_for("app: sending big")
        child.send(signal.SIGTERM)
        assert_cancelled_at_the_deadline(child, "http: GET /big")
        while sock.recv(1 << 20):  # no RST on a unix socket: its end
            pass


def test_a_websocket_client_that_stops_reading_is_reset(backend: str) -> None:
    with (
        serving(backend, "--drain", "0.5") as (child, address),
        not_reading(address) as sock,
    ):
        ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        sock.sendall(ws.send(wsproto.events.Request(host="x", target="/ws")))
        data = sock.recv(65536)
        ws.receive_data(data)
        assert isinstance(next(ws.events()), wsproto.events.AcceptConnection)
        sock.sendall(ws.send(wsproto.events.TextMessage(data=f"big {BIG_MB}")))
        child.wait_for("app: sending big message")
        child.send(signal.SIGTERM)
        assert_cancelled_at_the_deadline(child, "http: WEBSOCKET /ws")
        assert_reset(sock)
    assert "app: big message sent" not in child.output


@pytest.mark.parametrize("window", [2**31 - 1, 0])
def test_an_http2_client_that_stops_reading_is_cut(backend: str, window: int) -> None:
    # A wide-open window: hypercorn writes until the socket blocks. A zero
    # window: the response waits for the client's flow control instead.
    with (
        serving(backend, "--drain", "0.5") as (child, address),
        not_reading(address) as sock,
    ):
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        if window:
            conn.increment_flow_control_window(window - 65535)
        headers = [
            (":method", "GET"),
            (":path", f"/big?mb={BIG_MB}"),
            (":scheme", "http"),
            (":authority", "x"),
        ]
        conn.send_headers(1, headers, end_stream=True)
        sock.sendall(conn.data_to_send())
        child.wait_for("app: sending big")
        child.send(signal.SIGTERM)
        assert_cancelled_at_the_deadline(child, "http: GET /big")
        if window:
            assert_reset(sock)
    assert "app: big sent" not in child.output


def test_a_client_that_never_sends_its_body_is_cancelled(backend: str) -> None:
    with (
        serving(backend, "--drain", "0.5") as (child, address),
        socket.create_connection(address, timeout=10) as sock,
    ):
        head = b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
        sock.sendall(head + b"only part of it")
        child.wait_for("app: reading body")
        child.send(signal.SIGTERM)
        assert_cancelled_at_the_deadline(child, "http: POST /upload")


def test_a_slowloris_request_does_not_hold_the_drain(backend: str) -> None:
    # Headers trickled a byte at a time, on and on: the drain closes the
    # connection at once (a request never complete holds nothing).
    with (
        serving(backend, "--drain", "60") as (child, address),
        socket.create_connection(address, timeout=10) as sock,
    ):
        sock.sendall(b"GET / HTTP/1.1\r\n")
        child.send(signal.SIGTERM)
        closed = False
        # The drain gives a connection without a whole request one second
        # from its accept; this trickle goes on for several.
        for byte in b"X-Slow: " + b"a" * 2000:
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            time.sleep(0.005)
        code = child.finish()
    assert closed
    assert code == 0, child.output
    report = report_of(child)
    assert report["clean"] is True
    assert services(report)["db"]["outcome"] == "stopped"


# A request path that, printed raw, would forge a report line and clear the
# screen of whoever reads the log.
FORGED = "shutdown clean (exit code 0) after 1.0 ms"
HOSTILE_TARGET = "/x%0A" + FORGED.replace(" ", "%20") + "%1B%5B2J%0D%C3%A9%FF"
TRUE_LABEL = f"http: GET /x\n{FORGED}\x1b[2J\r\u00e9\ufffd"
# Printable characters stay (é, and U+FFFD for the byte that is not UTF-8).
SHOWN_LABEL = rf"http: GET /x\n{FORGED}\x1b[2J\r" + "\u00e9\ufffd"


def assert_no_forged_line(child: Child) -> None:
    for line in child.lines:
        assert not line.startswith(FORGED), child.output
        assert "\x1b" not in line, line


def test_a_hostile_request_path_is_shown_escaped(backend: str) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        path = f"/tmp/shutdown-scope-h4-{uuid.uuid4().hex}.sock"  # noqa: S108
        manager.bind(path)
        options = ("--drain", "0.5")
        env = {"NOTIFY_SOCKET": path}
        try:
            with Child(CHILD, "--backend", backend, *options, env=env) as child:
                url = child.wait_for("listening http://").split()[-1]
                host, port = url.removeprefix("http://").rsplit(":", 1)
                sock = socket.create_connection((host, int(port)), timeout=10)
                with sock:
                    request = f"GET {HOSTILE_TARGET}?hold HTTP/1.1\r\nHost: x\r\n\r\n"
                    sock.sendall(request.encode())
                    child.wait_for("app: holding")
                    child.send(signal.SIGTERM)
                    assert child.finish() == 1, child.output
        finally:
            Path(path).unlink()
        manager.setblocking(False)
        messages = []
        with contextlib.suppress(BlockingIOError):
            while True:
                messages.append(manager.recv(65536).decode())
    assert_no_forged_line(child)
    # The phase log lines, and the report's lines (logged as it is printed).
    assert sum(SHOWN_LABEL in line for line in child.lines) >= 3, child.output
    # The JSON report keeps the true label.
    cancelled = services(report_of(child))["http"]["cancelled_in_flight"]
    assert TRUE_LABEL in cancelled
    # STATUS= for the service manager: one line each, the label escaped.
    statuses = [line for message in messages for line in message.split("\n") if line]
    assert all("=" in line and line.split("=")[0].isupper() for line in statuses)
    shown = SHOWN_LABEL[:30]
    assert any(line.startswith("STATUS=") and shown in line for line in statuses)


def test_a_hostile_request_path_is_escaped_in_the_watchdog_dump(
    backend: str,
) -> None:
    options = ("--drain", "0.3", "--cancel", "0.3")
    with (
        serving(backend, *options) as (child, address),
        socket.create_connection(address, timeout=10) as sock,
    ):
        request = f"GET {HOSTILE_TARGET}?block HTTP/1.1\r\nHost: x\r\n\r\n"
        sock.sendall(request.encode())
        child.wait_for("app: blocking the event loop")
        child.send(signal.SIGTERM)
        assert child.finish() == 128 + signal.SIGTERM, child.output
    assert_no_forged_line(child)
    dump = child.lines[child.index("shutdown_scope watchdog:") :]
    assert any(SHOWN_LABEL in line for line in dump), child.output
