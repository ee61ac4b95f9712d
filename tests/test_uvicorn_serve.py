"""shutdown_scope.uvicorn.serve: real uvicorn protocols, real signals, real clients.

The subprocess tests run examples/uvicorn_app.py and stop it with a real SIGTERM
(the cases shared with hypercorn are in tests/_serving_cases.py). The in-process
tests check arguments, binding and the lifespan, on asyncio (uvicorn's loop).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import _serving_cases as cases
import anyio
import pytest
import uvicorn
from _asgi_clients import answer_lifespan
from _services import NO_SIGNALS
from _spawn import Child, Launcher
from anyio.abc import TaskStatus

from shutdown_scope import ServiceNotStartedError, ShutdownToken, graceful_scope
from shutdown_scope.asgi import ShutdownMiddleware
from shutdown_scope.uvicorn import LifespanStartupError, serve

if sys.version_info < (3, 11):  # pragma: no cover -- only on 3.10
    from exceptiongroup import ExceptionGroup

SERVER = cases.UVICORN_H11
HTTPTOOLS = importlib.util.find_spec("httptools") is not None
# uvicorn's two HTTP/1.1 protocols (httptools, uvicorn's choice when installed).
SERVERS = [
    SERVER,
    pytest.param(
        cases.UVICORN_HTTPTOOLS,
        marks=pytest.mark.skipif(not HTTPTOOLS, reason="httptools is not installed"),
    ),
]
WARNING_LINE = re.compile(r"^.+:\d+: (?P<category>\w+): ", re.MULTILINE)

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


# -- a real uvicorn app, stopped by SIGTERM --------------------------------------

subprocess_test = pytest.mark.subprocess


@subprocess_test
@pytest.mark.parametrize(
    "case",
    [cases.no_request_lost_under_load, *cases.EVERY_SERVER],
    ids=lambda case: case.__name__,
)
@pytest.mark.parametrize("server", SERVERS, ids=lambda server: server.name)
def test_serving_case(
    case: Callable[[cases.Server], None], server: cases.Server
) -> None:
    case(server)


@subprocess_test
def test_the_scope_owns_sigterm_and_the_lifespan_ends_between_drain_and_pool() -> None:
    with SERVER.running() as (child, url):
        assert cases.get(url, "/work?ms=0").status_code == 200
        child.send(signal.SIGTERM)
        # 0: the scope's clean stop; uvicorn did not raise SIGTERM again.
        assert child.finish() == 0, child.output
    child.assert_in_order(
        "pool: open",
        "lifespan: startup",
        "shutdown_scope: STOPPING",
        "shutdown_scope: DRAINING",
        "lifespan: shutdown; /work requests: 1 read, 1 answered",
        "pool: closed",
    )
    report = cases.report_of(child)
    assert report["signal"] == signal.SIGTERM
    assert report["signals_received"] == 1
    services = {s["name"]: s for s in report["services"]}
    assert services["http"]["outcome"] == "returned"
    assert services["pool"]["outcome"] == "stopped"
    assert "ServerOwnsSignalsWarning" not in child.output


@subprocess_test
def test_serves_the_sockets_a_launcher_hands_it() -> None:
    command = [sys.executable, str(cases.EXAMPLES / "uvicorn_app.py"), "--json"]
    with Launcher(
        "-m", "shutdown_scope", "run", "--listen", "127.0.0.1:0", "--", *command
    ) as launcher:
        line = launcher.wait_for("shutdown-scope: listening on 127.0.0.1:")
        port = re.search(r"127\.0\.0\.1:(\d+) ", line)
        assert port is not None, line
        url = f"http://127.0.0.1:{port[1]}"
        # The app reports the launcher's address: it bound nothing itself
        # (its own default, 127.0.0.1:8000, is not what it serves).
        assert launcher.wait_for("listening http://").split()[-1] == url
        launcher.wait_for(") ready")
        assert cases.get(url, "/work?ms=0").status_code == 200
        launcher.send(signal.SIGTERM)
        assert launcher.finish() == 0, launcher.output
    assert "lifespan: shutdown; /work requests: 1 read, 1 answered" in launcher.output


@subprocess_test
def test_plain_uvicorn_warns_that_it_owns_sigterm() -> None:
    app_dir = str(Path(__file__).parent)
    argv = ("-m", "uvicorn", "--app-dir", app_dir, "_plain_uvicorn_app:app")
    with Child(*argv, "--port", "0", "--lifespan", "on") as child:
        line = child.wait_for("Uvicorn running on http://127.0.0.1:")
        found = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert found is not None, line
        url = found[0]
        with_token = cases.connect(url)
        with_token.sendall(b"GET /token HTTP/1.1\r\nHost: x\r\n\r\n")
        _, with_body = cases.read_response(with_token)
        with cases.connect(url) as plain:
            plain.sendall(b"GET /plain/token HTTP/1.1\r\nHost: x\r\n\r\n")
            _, plain_body = cases.read_response(plain)
        child.send(signal.SIGTERM)
        report = json.loads(child.wait_for("REPORT ").removeprefix("REPORT "))
        child.finish()
        with_token.close()
    warnings = [m["category"] for m in WARNING_LINE.finditer(child.output)]
    assert warnings == ["ServerOwnsSignalsWarning"], child.output
    assert (with_body, plain_body) == (b"token: yes\n", b"token: no\n")
    # What the warning is about: uvicorn took SIGTERM, the scope never saw it.
    assert report["signal"] is None
    assert report["phases"][0]["in_flight"] == []


# -- in process ------------------------------------------------------------------


@pytest.fixture
def anyio_backend() -> str:
    """Asyncio: uvicorn's loop (real clocks: the clients are real sockets)."""
    return "asyncio"


async def hello(scope: Message, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await answer_lifespan(receive, send)
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


def config_for(app: Any = hello, **options: Any) -> uvicorn.Config:
    return uvicorn.Config(app, log_config=None, **{"port": 0, **options})


async def fetch(family: int, address: Any, path: str = "/") -> bytes:
    """One request over a blocking socket, in a thread."""
    request = f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        await anyio.to_thread.run_sync(sock.connect, address)
        sock.sendall(request.encode())
        chunks = []
        while chunk := await anyio.to_thread.run_sync(sock.recv, 65536):
            chunks.append(chunk)
        return b"".join(chunks)


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


@pytest.fixture
def no_sigterm_handler() -> Iterator[None]:
    """SIGTERM's handler is the default one, and is again after the test."""
    original = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    signal.signal(signal.SIGTERM, original)


pytestmark = pytest.mark.anyio


async def test_serves_host_port_and_leaves_the_signals_and_config_alone(
    no_sigterm_handler: None,
) -> None:
    config = config_for()
    async with graceful_scope(**NO_SIGNALS) as scope:
        (url,) = await scope.start(serve, hello, config)
        assert url.startswith("http://127.0.0.1:")
        answer = await fetch(socket.AF_INET, ("127.0.0.1", port_of(url)))
        # uvicorn's own headers: the server and a current date.
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"\r\nserver: uvicorn\r\n" in answer
        assert re.search(rb"\r\ndate: \w{3}, \d\d \w{3} \d{4} ", answer)
        assert answer.endswith(b"5\r\nhello\r\n0\r\n\r\n")
        # uvicorn's Server would have installed its own handlers by now.
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        scope.request_shutdown("test over")
    assert scope.report.clean
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert config.loaded is False  # the caller's config is not loaded nor changed
    assert config.app is hello


async def test_serves_a_unix_socket_and_removes_it(tmp_path: Path) -> None:
    path = tmp_path / "http.sock"
    path.touch()  # not a socket: refused, not removed
    async with graceful_scope(**NO_SIGNALS) as scope:
        with pytest.raises(FileExistsError, match="is not a socket"):
            await serve(scope.token, hello, config_for(uds=str(path)))
        path.unlink()
        (url,) = await scope.start(serve, hello, config_for(uds=str(path)))
        assert url == f"http://unix:{path}"
        assert oct(path.stat().st_mode & 0o777) == oct(0o666)  # as uvicorn does
        answer = await fetch(socket.AF_UNIX, str(path))
        assert answer.endswith(b"5\r\nhello\r\n0\r\n\r\n")
        scope.request_shutdown("test over")
    assert scope.report.clean
    assert not path.exists()


@pytest.mark.parametrize("how", ["fd", "sockets"])
async def test_serves_an_inherited_socket(how: str) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    fd = -1
    if how == "fd":
        fd = listener.detach()
        service, config = serve, config_for(fd=fd)
    else:
        service, config = functools.partial(serve, sockets=[listener]), config_for()
    async with graceful_scope(**NO_SIGNALS) as scope:
        (url,) = await scope.start(service, hello, config)
        assert url == f"http://127.0.0.1:{port}"
        answer = await fetch(socket.AF_INET, ("127.0.0.1", port))
        assert answer.endswith(b"5\r\nhello\r\n0\r\n\r\n")
        scope.request_shutdown("test over")
    assert scope.report.clean
    # Closed at the end: the address no longer accepts.
    with pytest.raises(OSError):  # noqa: PT011 -- refused, however the OS says it
        await anyio.connect_tcp("127.0.0.1", port)
    if how == "fd":
        with pytest.raises(OSError):  # noqa: PT011 -- EBADF
            os.fstat(fd)


async def test_port_in_use_names_the_address() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(ExceptionGroup) as caught:
            async with graceful_scope(**NO_SIGNALS) as scope:
                await scope.start(serve, hello, config_for(port=port))
    (error,) = caught.value.exceptions
    assert isinstance(error, OSError)
    assert f"127.0.0.1:{port}" in str(error)
    assert "in use" in str(error)


@pytest.mark.parametrize(
    ("replaced", "value", "message"),
    [
        (0, "not a token", "ShutdownToken first"),
        (1, "not an app", "ASGI application"),
        (2, {"port": 0}, "uvicorn.Config"),
    ],
)
async def test_bad_arguments(replaced: int, value: object, message: str) -> None:
    async with graceful_scope(**NO_SIGNALS) as scope:
        call: list[Any] = [scope.token, hello, config_for()]
        call[replaced] = value
        with pytest.raises(TypeError, match=message):
            await serve(*call)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"ssl_certfile": "x.pem"}, "TLS"),
        ({"http": "zttp"}, "HTTP/2"),
        ({"http2": True}, "HTTP/2"),
        ({"workers": 2}, "workers"),
        ({"limit_max_requests": 10}, "limit_max_requests"),
        ({"factory": True}, "factory"),
        ({"interface": "wsgi"}, "ASGI 3"),
        ({"interface": "asgi2"}, "ASGI 3"),
        ({"fd": 3, "uds": "/tmp/x.sock"}, "both set"),  # noqa: S108 -- never bound
        ({"http": ShutdownMiddleware}, "uvicorn's own HTTP"),
    ],
)
async def test_unsupported_config(options: dict[str, Any], message: str) -> None:
    async with graceful_scope(**NO_SIGNALS) as scope:
        with pytest.raises(ValueError, match=message):
            await serve(scope.token, hello, config_for(**options))


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_trio_is_refused_with_the_reason() -> None:
    async with graceful_scope(**NO_SIGNALS) as scope:
        with pytest.raises(RuntimeError, match="runs on asyncio only"):
            await serve(scope.token, hello, config_for())


async def test_lifespan_shutdown_runs_before_dependencies_stop() -> None:
    events: list[str] = []

    async def db(token: ShutdownToken, *, task_status: TaskStatus[None]) -> None:
        task_status.started()
        try:
            await anyio.sleep_forever()
        finally:
            events.append("db closed")

    async def app(scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":  # the lifespan's state reaches each request
            body = scope["state"]["db"].encode()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": body})
            return
        await receive()
        scope["state"]["db"] = "pool"
        await send({"type": "lifespan.startup.complete"})
        await receive()
        events.append("lifespan shutdown")
        await send({"type": "lifespan.shutdown.complete"})

    async with graceful_scope(**NO_SIGNALS) as scope:
        await scope.start(db)
        (url,) = await scope.start(serve, app, config_for(app, lifespan="on"))
        answer = await fetch(socket.AF_INET, ("127.0.0.1", port_of(url)))
        scope.request_shutdown("test over")
    assert answer.endswith(b"4\r\npool\r\n0\r\n\r\n")
    assert events == ["lifespan shutdown", "db closed"]
    assert [s.outcome for s in scope.report.services] == ["stopped", "returned"]


@pytest.mark.parametrize(
    ("lifespan", "fails", "message"),
    [
        ("auto", "message", "failed: no database"),
        ("on", "message", "failed: no database"),
        ("on", "raises", "raised an exception"),
    ],
)
async def test_a_failed_lifespan_startup_fails_start(
    lifespan: str, fails: str, message: str
) -> None:
    async def app(scope: Message, receive: Receive, send: Send) -> None:
        await receive()
        if fails == "raises":
            raise OSError("no database")
        await send({"type": "lifespan.startup.failed", "message": "no database"})

    returned = []
    with pytest.raises(ExceptionGroup) as caught:
        async with graceful_scope(**NO_SIGNALS) as scope:
            config = config_for(app, lifespan=lifespan)
            returned.append(await scope.start(serve, app, config))
    assert returned == []  # never listened
    (failure,) = caught.value.exceptions
    assert isinstance(failure, LifespanStartupError)
    assert message in str(failure)


async def test_an_app_without_lifespan_support_is_served_with_auto() -> None:
    async def app(scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            raise RuntimeError("no lifespan here")
        await hello(scope, receive, send)

    async with graceful_scope(**NO_SIGNALS) as scope:
        (url,) = await scope.start(serve, app, config_for(app, lifespan="auto"))
        answer = await fetch(socket.AF_INET, ("127.0.0.1", port_of(url)))
        assert answer.endswith(b"5\r\nhello\r\n0\r\n\r\n")
        scope.request_shutdown("test over")
    assert scope.report.clean


async def test_a_shutdown_during_the_lifespan_startup_stops_the_start() -> None:
    startup_cancelled = anyio.Event()

    async def app(scope: Message, receive: Receive, send: Send) -> None:
        await receive()
        try:
            await anyio.sleep_forever()  # a startup that never completes
        finally:
            startup_cancelled.set()

    async def stop_soon(token: ShutdownToken) -> None:
        await anyio.sleep(0.1)
        scope.request_shutdown("deploy during startup")

    async with graceful_scope(**NO_SIGNALS) as scope:
        scope.start_soon(stop_soon)
        with pytest.raises(ServiceNotStartedError) as caught:
            await scope.start(serve, app, config_for(app, lifespan="on"))
    assert caught.value.by_shutdown
    assert startup_cancelled.is_set()
    # A start cut short is not a clean stop (as with hypercorn.serve): exit 1.
    assert not scope.report.clean
    assert scope.report.exit_code == 1
    assert [s.stopped_while_starting for s in scope.report.services].count(True) == 1


async def test_accepted_tcp_connections_do_not_wait_for_delayed_acks() -> None:
    # uvicorn writes a response's head and body separately: with Nagle's
    # algorithm on, the body waits for the client's delayed ACK (40 ms).
    from shutdown_scope._uvicorn_compat import UvicornServer, loaded_copy

    server = UvicornServer(loaded_copy(config_for(), hello), close_answer_wait=float)
    with (
        socket.create_server(("127.0.0.1", 0)) as listener,
        socket.create_connection(listener.getsockname()) as client,
    ):
        conn, _ = listener.accept()
        conn.setblocking(False)
        assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.handle, conn)
            await anyio.wait_all_tasks_blocked()
            assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := await anyio.to_thread.run_sync(client.recv, 65536):
                answer += chunk
        assert answer.endswith(b"5\r\nhello\r\n0\r\n\r\n")
    server.end()


async def test_lifespan_off_and_no_websocket_protocol() -> None:
    async def app(scope: Message, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"  # no lifespan scope with lifespan="off"
        await hello(scope, receive, send)

    async with graceful_scope(**NO_SIGNALS) as scope:
        config = config_for(app, lifespan="off", ws="none")
        (url,) = await scope.start(serve, app, config)
        answer = await fetch(socket.AF_INET, ("127.0.0.1", port_of(url)))
        assert answer.endswith(b"5\r\nhello\r\n0\r\n\r\n")
        scope.request_shutdown("test over")
    assert scope.report.clean


async def test_an_app_already_wrapped_keeps_its_middleware() -> None:
    async with graceful_scope(**NO_SIGNALS) as scope:
        wrapped = ShutdownMiddleware(hello, scope.token, readiness_path="/ready")
        service = functools.partial(serve, readiness_path="/other")
        (url,) = await scope.start(service, wrapped, config_for())
        address = ("127.0.0.1", port_of(url))
        ready = await fetch(socket.AF_INET, address, "/ready")
        other = await fetch(socket.AF_INET, address, "/other")
        scope.request_shutdown("test over")
    assert ready.startswith(b"HTTP/1.1 200 ")
    assert ready.endswith(b"\r\n\r\nready\n")
    assert other.endswith(b"5\r\nhello\r\n0\r\n\r\n")  # not a readiness path


@pytest.mark.parametrize("kind", ["udp", "pipe"])
async def test_an_fd_that_is_not_a_listening_socket_is_refused(kind: str) -> None:
    error: type[Exception]
    if kind == "udp":
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        fd, other = udp.detach(), -1
        error, message = ValueError, f"config.fd={fd} is not a stream socket"
    else:
        fd, other = os.pipe()
        error, message = OSError, f"uvicorn cannot listen on fd {fd}: "
    try:
        async with graceful_scope(**NO_SIGNALS) as scope:
            with pytest.raises(error, match=re.escape(message)):
                await serve(scope.token, hello, config_for(fd=fd))
            scope.request_shutdown("test over")
        os.fstat(fd)  # left open: it was not taken over
    finally:
        for each in (fd, other):
            if each >= 0:
                os.close(each)


async def test_a_unix_socket_that_cannot_be_bound_names_its_path(
    tmp_path: Path,
) -> None:
    path = tmp_path / "missing" / "http.sock"
    async with graceful_scope(**NO_SIGNALS) as scope:
        with pytest.raises(FileNotFoundError, match=f"cannot listen on unix:{path}"):
            await serve(scope.token, hello, config_for(uds=str(path)))
        scope.request_shutdown("test over")
