"""ShutdownMiddleware: readiness, in-flight tracking, Connection: close, websockets.

Most tests speak the ASGI calling convention to the middleware directly; one
runs it under a real uvicorn server driven by a real httpx client.
"""

from __future__ import annotations

import math
import signal
import socket
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest
from _asgi_clients import (
    FakeWebSocket,
    HttpExchange,
    call_http,
    http_scope,
    websocket_scope,
)
from _services import NO_SIGNALS
from anyio.abc import TaskStatus
from trio.testing import MockClock

from shutdown_scope import Phase, ShutdownToken, graceful_scope
from shutdown_scope.asgi import (
    TOKEN_KEY,
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    ServerOwnsSignalsWarning,
    ShutdownMiddleware,
    token_from_scope,
)
from shutdown_scope.testing import drive_to, graceful_test_scope, virtual_clock_backend

pytestmark = pytest.mark.anyio

# Long enough that a test's body always ends inside STOPPING: it never waits
# for it, because a scope whose body has returned stops at once.
STAY_IN_STOPPING: dict[str, Any] = {**NO_SIGNALS, "announce_delay": 600}
HELLO = {"type": "websocket.send", "text": "hello"}
GOING_AWAY = {"type": "websocket.close", "code": 1001, "reason": "server shutting down"}


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    headers = [(b"content-type", b"text/plain")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"hello"})


async def chat(scope: Scope, receive: Receive, send: Send) -> None:
    assert (await receive())["type"] == "websocket.connect"
    await chat_after_connect(receive, send)


async def chat_after_connect(receive: Receive, send: Send) -> None:
    """Accepts, greets, reads until the disconnect, then (too late) says goodbye."""
    await send({"type": "websocket.accept"})
    await send(HELLO)
    while (await receive())["type"] != "websocket.disconnect":
        pass
    await send({"type": "websocket.send", "text": "bye"})
    await send({"type": "websocket.close", "code": 1000})


async def serve_websockets(
    token: ShutdownToken,
    app: ASGIApp,
    clients: list[FakeWebSocket],
    spread: float,
    *,
    task_status: TaskStatus[None],
) -> None:
    middleware = ShutdownMiddleware(app, token, websocket_close_spread=spread)
    async with anyio.create_task_group() as tg:
        for client in clients:
            tg.start_soon(middleware, websocket_scope(), client.receive, client.send)
        task_status.started()


# -- HTTP ------------------------------------------------------------------------


async def test_readiness_answers_200_then_503_with_the_reason() -> None:
    paths: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        paths.append(scope["path"])
        await hello(scope, receive, send)

    async with graceful_scope(**STAY_IN_STOPPING) as scope:
        token = scope.token
        middleware = ShutdownMiddleware(app, token, readiness_path="/ready")
        ready = await call_http(middleware, http_scope("/ready"), token=token)
        scope.request_shutdown("deploy")
        stopping = await call_http(middleware, http_scope("/ready"), token=token)
        head = await call_http(middleware, http_scope("/ready", method="HEAD"))
        on_h2 = await call_http(middleware, http_scope("/ready", http_version="2"))
        other = await call_http(middleware, http_scope("/ready/deeper"))

    common = [(b"content-type", b"text/plain; charset=utf-8")]
    assert (ready.status, ready.body) == (200, b"ready\n")
    assert ready.headers == [
        *common,
        (b"content-length", b"6"),
        (b"cache-control", b"no-store"),
    ]
    assert (stopping.status, stopping.body) == (503, b"shutting down: deploy\n")
    assert stopping.headers == [
        *common,
        (b"content-length", b"22"),
        (b"cache-control", b"no-store"),
        (b"connection", b"close"),
    ]
    assert (head.status, head.body, head.headers) == (503, b"", stopping.headers)
    assert (b"connection", b"close") not in on_h2.headers
    # Answered here: the app never saw it, and it was never in flight.
    assert paths == ["/ready/deeper"]
    assert ready.in_flight_at_send == stopping.in_flight_at_send == [0, 0]
    assert (other.status, other.body) == (200, b"hello")


async def test_request_is_in_flight_under_its_label() -> None:
    seen: list[tuple[ShutdownToken, tuple[str, ...]]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        token = token_from_scope(scope)
        seen.append((token, token.in_flight_labels()))
        await hello(scope, receive, send)

    long_path = "/" + "x" * 300
    async with graceful_scope(**NO_SIGNALS) as scope:
        token = scope.token.child("http")
        middleware = ShutdownMiddleware(app, token)
        request = http_scope("/items", method="POST")
        await call_http(middleware, request)
        await call_http(middleware, http_scope(long_path))
        assert token.in_flight_count == 0
        assert TOKEN_KEY not in request  # the middleware copied the scope
    (t1, first), (t2, second) = seen
    assert t1 is t2 is token
    assert first == ("http/POST /items",)
    assert second == ("http/GET /" + "x" * 98 + "…",)
    assert len(second[0]) == len("http/GET ") + 100


async def test_under_serves_servers_the_token_goes_into_the_servers_scope() -> None:
    # serve()'s servers build a scope per request and read back only keys of
    # their own: no copy there; any other server's scope is copied.
    seen: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope)
        await hello(scope, receive, send)

    async with graceful_scope(**NO_SIGNALS) as scope:
        token = scope.token.child("http")
        served = ShutdownMiddleware(app, token)
        served._under_serve()  # as serve() builds it
        own = http_scope("/items")
        await call_http(served, own)
        copied = http_scope("/items")
        await call_http(ShutdownMiddleware(app, token), copied)
    assert seen[0] is own
    assert own[TOKEN_KEY] is token
    assert seen[1] is not copied
    assert seen[1][TOKEN_KEY] is token
    assert TOKEN_KEY not in copied


# Virtual time on both backends (the test kit's clocks): exact times on asyncio too.
@pytest.mark.parametrize(
    "anyio_backend",
    [virtual_clock_backend("asyncio"), virtual_clock_backend("trio")],
    ids=["asyncio", "trio"],
)
async def test_drain_waits_for_a_slow_request() -> None:
    running = anyio.Event()

    async def slow(scope: Scope, receive: Receive, send: Send) -> None:
        running.set()
        await anyio.sleep(5)
        await hello(scope, receive, send)

    exchanges: list[HttpExchange] = []

    async def web(token: ShutdownToken, *, task_status: TaskStatus[None]) -> None:
        middleware = ShutdownMiddleware(slow, token)
        task_status.started()
        exchanges.append(await call_http(middleware, http_scope("/slow")))
        await anyio.sleep_forever()  # nothing in flight now: stopped when drained

    async with graceful_test_scope(drain_timeout=20) as scope:
        await scope.start(web)
        await running.wait()
        assert scope.token.in_flight_labels() == ("web: GET /slow",)
        assert await drive_to(scope, Phase.DRAINING, reason="deploy") == Phase.DRAINING
    report = scope.report
    assert [(p.phase, p.started, p.duration, p.in_flight) for p in report.phases] == [
        (Phase.STOPPING, 0, 0, ("web: GET /slow",)),
        (Phase.DRAINING, 0, 5, ("web: GET /slow",)),
    ]
    (svc,) = report.services
    assert (svc.outcome, svc.finished_at, svc.cancelled_in_flight) == ("stopped", 5, ())
    assert report.clean
    (exchange,) = exchanges
    assert exchange.body == b"hello"
    assert (b"connection", b"close") in exchange.headers


@pytest.mark.parametrize("http_version", ["1.0", "1.1", "2"])
async def test_connection_close_once_stopping_on_http1_only(http_version: str) -> None:
    headers = [(b"content-type", b"text/plain"), (b"Connection", b"keep-alive")]
    start = {"type": "http.response.start", "status": 200, "headers": headers}
    body = {"type": "http.response.body", "body": b"hi"}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(start)
        await send(body)

    async with graceful_scope(**STAY_IN_STOPPING) as scope:
        middleware = ShutdownMiddleware(app, scope.token)
        before = await call_http(middleware, http_scope(http_version=http_version))
        scope.request_shutdown("deploy")
        after = await call_http(middleware, http_scope(http_version=http_version))

    # While ready, messages pass through as they are, not even copied.
    assert before.sent[0] is start
    assert before.sent[1] is after.sent[1] is body
    if http_version != "2":
        assert after.headers == [
            (b"content-type", b"text/plain"),
            (b"connection", b"close"),
        ]
        assert start["headers"] == headers  # the app's message was not changed
    else:
        assert after.sent[0] is start  # HTTP/2 forbids Connection headers


async def test_request_that_raises_leaves_nothing_in_flight() -> None:
    async def broken(scope: Scope, receive: Receive, send: Send) -> None:
        assert token_from_scope(scope).in_flight_count == 1
        raise ZeroDivisionError

    async with graceful_scope(**NO_SIGNALS) as scope:
        middleware = ShutdownMiddleware(broken, scope.token)
        with pytest.raises(ZeroDivisionError):
            await call_http(middleware, http_scope())
        client = FakeWebSocket()
        with pytest.raises(ZeroDivisionError):  # itself, not an ExceptionGroup
            await middleware(websocket_scope(), client.receive, client.send)
        assert scope.token.in_flight_count == 0


async def test_lifespan_passes_through_untouched() -> None:
    calls: list[tuple[Scope, Receive, Send]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        calls.append((scope, receive, send))

    async def receive() -> Message:
        return {"type": "lifespan.startup"}

    async def send(message: Message) -> None:
        pass

    lifespan = {"type": "lifespan", "asgi": {"version": "3.0"}}
    async with graceful_scope(**NO_SIGNALS) as scope:
        await ShutdownMiddleware(app, scope.token)(lifespan, receive, send)
    ((got_scope, got_receive, got_send),) = calls
    assert got_scope is lifespan
    assert TOKEN_KEY not in lifespan
    assert (got_receive, got_send) == (receive, send)


async def test_token_from_scope_says_how_to_fix_a_missing_token() -> None:
    with pytest.raises(LookupError, match=r"wrap the app in .*ShutdownMiddleware"):
        token_from_scope(http_scope())
    with pytest.raises(LookupError, match=r"shutdown_scope\.hypercorn\.serve"):
        token_from_scope({**http_scope(), TOKEN_KEY: "not a token"})


async def test_token_from_scope_default_for_code_that_runs_without_the_middleware() -> (
    None
):
    sentinel = object()
    assert token_from_scope(http_scope(), default=None) is None
    assert token_from_scope(http_scope(), default=sentinel) is sentinel
    wrong = {**http_scope(), TOKEN_KEY: "not a token"}
    assert token_from_scope(wrong, default=None) is None
    async with graceful_scope(**NO_SIGNALS) as scope:
        found = {**http_scope(), TOKEN_KEY: scope.token}
        assert token_from_scope(found, default=None) is scope.token
        scope.request_shutdown()


def _foreign_sigterm_handler(signum: int, frame: object) -> None:
    """A server's own handler (uvicorn's, hypercorn's, gunicorn's)."""


@pytest.fixture
def sigterm_handler() -> Iterator[Callable[[Any], None]]:
    """Install a SIGTERM handler for the test; the original comes back after."""
    original = signal.getsignal(signal.SIGTERM)

    def install(handler: Any) -> None:
        signal.signal(signal.SIGTERM, handler)

    yield install
    signal.signal(signal.SIGTERM, original)


async def test_warns_once_when_the_server_owns_sigterm(
    sigterm_handler: Callable[[Any], None],
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    sigterm_handler(_foreign_sigterm_handler)
    async with graceful_scope(**NO_SIGNALS) as scope:
        middleware = ShutdownMiddleware(app, scope.token)
        with pytest.warns(ServerOwnsSignalsWarning) as caught:  # noqa: PT031 -- both calls
            first = await call_http(middleware, http_scope())
            second = await call_http(middleware, http_scope())
        scope.request_shutdown()
    assert len(caught) == 1  # once per middleware, at its first call
    assert "_foreign_sigterm_handler" in str(caught[0].message)
    assert first.status == second.status == 204  # the request itself is served


@pytest.mark.parametrize("handler", ["default", "ignored", "a graceful_scope"])
async def test_no_warning_when_no_server_took_sigterm(
    handler: str, sigterm_handler: Callable[[Any], None]
) -> None:
    # pytest's filterwarnings = error turns a warning into a failure here.
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    sigterm_handler({"ignored": signal.SIG_IGN}.get(handler, signal.SIG_DFL))
    signals = (signal.SIGTERM,) if handler == "a graceful_scope" else ()
    async with graceful_scope(signals=signals, hard_exit=False) as scope:
        exchange = await call_http(ShutdownMiddleware(app, scope.token), http_scope())
        scope.request_shutdown()
    assert exchange.status == 204


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"app": None}, TypeError, "app must be an ASGI 3 application"),
        ({"token": "body"}, TypeError, "token must be a ShutdownToken, not str"),
        ({"readiness_path": b"/r"}, TypeError, "readiness_path must be a str or None"),
        ({"readiness_path": "ready"}, ValueError, "readiness_path must start with '/'"),
        ({"websocket_close_spread": True}, TypeError, "must be a number of seconds"),
        ({"websocket_close_spread": "1"}, TypeError, "must be a number of seconds"),
        ({"websocket_close_spread": -1}, ValueError, "must be finite and >= 0"),
        ({"websocket_close_spread": math.nan}, ValueError, "must be finite and >= 0"),
        ({"websocket_close_spread": math.inf}, ValueError, "must be finite and >= 0"),
    ],
)
async def test_invalid_arguments_state_the_rule(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    async with graceful_scope(**NO_SIGNALS) as scope:
        arguments: dict[str, Any] = {"app": hello, "token": scope.token, **kwargs}
        with pytest.raises(error, match=match):
            ShutdownMiddleware(**arguments)
        # The edges of the valid range are accepted.
        ShutdownMiddleware(hello, scope.token, readiness_path="/")
        ShutdownMiddleware(hello, scope.token, websocket_close_spread=0)


# -- websockets ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("spread", "drain_timeout", "window"),
    [
        (1.0, 20, 1.0),  # the spread as given
        (10, 2, 0.5),  # a quarter of the drain: time left for the apps to end
        (0, 20, 0),  # no spread: all at once
    ],
)
async def test_websockets_get_1001_spread_over_the_start_of_the_drain(
    mock_clock: MockClock, spread: float, drain_timeout: float, window: float
) -> None:
    clients = [FakeWebSocket() for _ in range(20)]
    async with graceful_scope(
        announce_delay=3, drain_timeout=drain_timeout, **NO_SIGNALS
    ) as scope:
        await scope.start(serve_websockets, chat, clients, spread, name="ws")
        for client in clients:
            await client.accepted.wait()
        assert scope.token.in_flight_labels() == ("ws: WEBSOCKET /chat",) * 20
        draining_at = anyio.current_time() + 3
        scope.request_shutdown("deploy")
    closed_at = []
    for client in clients:
        # Only the middleware's close: the app's late send and close were dropped.
        assert client.messages == [{"type": "websocket.accept"}, HELLO, GOING_AWAY]
        closed_at.append(client.sent[-1][0])
    if window:
        assert all(draining_at <= t < draining_at + window for t in closed_at)
        assert len(set(closed_at)) > 1  # spread out, not all in one instant
    else:
        assert set(closed_at) == {draining_at}
    assert scope.report.clean


@pytest.mark.parametrize("first", ["app closes", "client leaves", "never accepted"])
async def test_no_1001_for_a_websocket_already_closed_or_never_open(
    mock_clock: MockClock, first: str
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()  # websocket.connect
        if first != "never accepted":
            await send({"type": "websocket.accept"})
        if first == "app closes":
            await send({"type": "websocket.close", "code": 1000})
        if first == "client leaves":
            assert (await receive())["type"] == "websocket.disconnect"
        # Still running well past the spread, when a close would have been sent.
        await token_from_scope(scope).wait_phase(Phase.DRAINING)
        await anyio.sleep(2)
        if first == "never accepted":
            await send({"type": "websocket.close", "code": 1008})  # a rejection

    client = FakeWebSocket()
    if first == "client leaves":
        client.disconnect(1000)
    async with graceful_scope(drain_timeout=20, **NO_SIGNALS) as scope:
        await scope.start(serve_websockets, app, [client], 1.0)
        scope.request_shutdown("deploy")
    codes = [m.get("code") for m in client.messages if m["type"] == "websocket.close"]
    assert (
        codes
        == {"app closes": [1000], "client leaves": [], "never accepted": [1008]}[first]
    )
    assert scope.report.phases[-1].duration == 2  # the drain waited for the app


async def test_websocket_accepted_after_its_close_time_is_closed_at_once(
    mock_clock: MockClock,
) -> None:
    async def late(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()  # websocket.connect
        await token_from_scope(scope).wait_phase(Phase.DRAINING)
        await anyio.sleep(2)  # past the spread: its close time has come and gone
        await chat_after_connect(receive, send)

    client = FakeWebSocket()
    async with graceful_scope(announce_delay=3, **NO_SIGNALS) as scope:
        await scope.start(serve_websockets, late, [client], 1.0)
        accepted_at = anyio.current_time() + 3 + 2
        scope.request_shutdown("deploy")
    # Closed right after its accept: even the greeting came too late.
    assert client.messages == [{"type": "websocket.accept"}, GOING_AWAY]
    assert [t for t, _ in client.sent] == [accepted_at] * 2
    assert scope.report.clean


class SilentClient(FakeWebSocket):
    """A client that vanished: it never answers the close frame."""

    async def send(self, message: Message) -> None:
        self.sent.append((anyio.current_time(), message))
        if message["type"] == "websocket.accept":
            self.accepted.set()


async def test_an_unanswered_close_does_not_hold_the_drain(
    mock_clock: MockClock,
) -> None:
    heard: list[tuple[float, Message]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        message = await receive()
        heard.append((anyio.current_time(), message))

    client = SilentClient()
    async with graceful_scope(drain_timeout=20, **NO_SIGNALS) as scope:
        await scope.start(serve_websockets, app, [client], 0)
        await client.accepted.wait()
        draining_at = anyio.current_time()
        scope.request_shutdown("deploy")
    assert client.messages == [{"type": "websocket.accept"}, GOING_AWAY]
    # Two seconds for the close handshake, then the app hears the client is gone.
    assert heard == [(draining_at + 2, {"type": "websocket.disconnect", "code": 1006})]
    assert scope.report.phases[-1].duration == 2
    assert scope.report.clean


async def test_websocket_closed_at_draining_on_each_backend() -> None:
    client = FakeWebSocket()
    async with graceful_scope(**NO_SIGNALS) as scope:
        await scope.start(serve_websockets, chat, [client], 0)
        await client.accepted.wait()
        scope.request_shutdown("deploy")
    assert client.messages == [{"type": "websocket.accept"}, HELLO, GOING_AWAY]
    assert scope.report.clean


# -- a real server ---------------------------------------------------------------


async def serve_uvicorn(
    token: ShutdownToken, app: ASGIApp, *, task_status: TaskStatus[int]
) -> None:
    """Serve with uvicorn on a free port, stopped through its own graceful shutdown."""
    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()  # clients queue in the backlog until uvicorn accepts
        middleware = ShutdownMiddleware(app, token, readiness_path="/ready")
        config = uvicorn.Config(
            middleware, http="h11", ws="none", lifespan="on", log_config=None
        )
        server = uvicorn.Server(config)

        async def exit_when_draining() -> None:
            await token.wait_phase(Phase.DRAINING)
            server.should_exit = True

        # uvicorn skips its shutdown when cancelled (listener and connections
        # stay open): its shutdown counts as in flight, so the drain waits for it.
        with token.in_flight("uvicorn"):
            async with anyio.create_task_group() as tg:
                tg.start_soon(exit_when_draining)
                task_status.started(sock.getsockname()[1])
                await server.serve(sockets=[sock])
                tg.cancel_scope.cancel()


@pytest.mark.parametrize("anyio_backend", ["asyncio"], indirect=True)  # uvicorn
async def test_under_uvicorn_readiness_and_connection_close() -> None:
    import httpx

    lifespan: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                lifespan.append(message["type"])
                await send({"type": "lifespan.startup.complete"})
            lifespan.append(message["type"])
            await send({"type": "lifespan.shutdown.complete"})
            return
        token_from_scope(scope)
        headers = [(b"content-type", b"text/plain")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        # The client's port tells which connection the request came on.
        await send({"type": "http.response.body", "body": b"%d" % scope["client"][1]})

    responses: list[httpx.Response] = []
    paths = ("/ready", "/hello", "/hello")

    async def client(
        token: ShutdownToken,
        port: int,
        request_shutdown: Callable[[str], None],
        *,
        task_status: TaskStatus[None],
    ) -> None:
        task_status.started()
        with token.in_flight("client"):  # uvicorn keeps serving until we are done
            base = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient(base_url=base, trust_env=False) as http:
                responses.extend([await http.get(p) for p in paths])
                request_shutdown("deploy")
                responses.extend([await http.get(p) for p in paths])

    original_sigterm = signal.getsignal(signal.SIGTERM)
    # uvicorn's Server owns SIGTERM here, and the middleware says so.
    with pytest.warns(ServerOwnsSignalsWarning) as warned:  # noqa: PT031 -- a whole run
        async with graceful_scope(**NO_SIGNALS) as scope:
            port = await scope.start(serve_uvicorn, app)
            await scope.start(client, port, scope.request_shutdown)
    assert len(warned) == 1

    ready, hello1, hello2, not_ready, hello3, hello4 = responses
    assert (ready.status_code, ready.text) == (200, "ready\n")
    assert ready.headers["cache-control"] == "no-store"
    assert "connection" not in hello1.headers
    # Keep-alive while ready: one connection for all three.
    assert hello1.text == hello2.text
    assert (not_ready.status_code, not_ready.text) == (503, "shutting down: deploy\n")
    assert not_ready.headers["connection"] == "close"
    assert (hello3.status_code, hello3.headers["connection"]) == (200, "close")
    # Each response with Connection: close ended its connection.
    assert hello2.text != hello3.text != hello4.text
    assert lifespan == ["lifespan.startup", "lifespan.shutdown"]
    assert scope.report.clean
    assert signal.getsignal(signal.SIGTERM) is original_sigterm
    with pytest.raises(OSError):  # noqa: PT011 -- refused, however the OS says it
        await anyio.connect_tcp("127.0.0.1", port)
