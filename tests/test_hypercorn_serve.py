"""shutdown_scope.hypercorn.serve in process: arguments, binding, lifespan failure."""

from __future__ import annotations

import contextlib
import gc
import math
import os
import socket
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import anyio
import pytest
from _asgi_clients import answer_lifespan
from _services import NO_SIGNALS
from anyio.abc import TaskStatus
from hypercorn.config import Config
from trio.testing import MockClock

from shutdown_scope import ShutdownToken, graceful_scope
from shutdown_scope.hypercorn import serve

if sys.version_info < (3, 11):  # pragma: no cover -- only on 3.10
    from exceptiongroup import BaseExceptionGroup, ExceptionGroup

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Real clocks: with trio's autojumping MockClock, hypercorn's keep-alive
    timer would fire while a client thread is still connecting."""
    name: str = request.param
    return name


Message = MutableMapping[str, Any]


async def hello(
    scope: Message,
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    if scope["type"] == "lifespan":
        await answer_lifespan(receive, send)
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


def config_for(*binds: str) -> Config:
    config = Config()
    config.bind = list(binds)
    config.accesslog = None
    return config


async def fetch(family: int, address: Any) -> bytes:
    """One request over a blocking socket, in a thread (any backend)."""
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        await anyio.to_thread.run_sync(sock.connect, address)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        chunks = []
        while chunk := await anyio.to_thread.run_sync(sock.recv, 65536):
            chunks.append(chunk)
        return b"".join(chunks)


async def test_serves_host_port_and_unix_and_reports_urls(tmp_path: Path) -> None:
    path = tmp_path / "http.sock"
    async with graceful_scope(**NO_SIGNALS) as scope:
        urls = await scope.start(
            serve, hello, config_for("127.0.0.1:0", f"unix:{path}")
        )
        tcp_url, unix_url = urls
        assert tcp_url.startswith("http://127.0.0.1:")
        assert unix_url == f"http://unix:{path}"
        port = int(tcp_url.rsplit(":", 1)[1])
        assert (await fetch(socket.AF_INET, ("127.0.0.1", port))).endswith(
            b"5\r\nhello\r\n0\r\n\r\n"
        )
        assert (await fetch(socket.AF_UNIX, str(path))).endswith(
            b"5\r\nhello\r\n0\r\n\r\n"
        )
        scope.request_shutdown("test over")
    assert scope.report.clean
    assert scope.report.services[0].outcome == "returned"


async def test_serves_an_inherited_socket() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    fd = os.dup(listener.fileno())
    listener.close()
    async with graceful_scope(**NO_SIGNALS) as scope:
        (url,) = await scope.start(serve, hello, config_for(f"fd://{fd}"))
        assert url == f"http://127.0.0.1:{port}"
        assert (await fetch(socket.AF_INET, ("127.0.0.1", port))).endswith(
            b"5\r\nhello\r\n0\r\n\r\n"
        )
        scope.request_shutdown("test over")
    assert scope.report.clean


async def test_port_in_use_names_the_address() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        bind = f"127.0.0.1:{taken.getsockname()[1]}"
        with pytest.raises(ExceptionGroup) as caught:
            async with graceful_scope(**NO_SIGNALS) as scope:
                await scope.start(serve, hello, config_for(bind))
    (error,) = caught.value.exceptions
    assert isinstance(error, OSError)
    assert bind in str(error)
    assert "in use" in str(error)


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        (("not a token", hello, Config()), TypeError, "ShutdownToken first"),
        ((None, "not an app", Config()), TypeError, "ASGI application"),
        ((None, hello, {"bind": "x"}), TypeError, "hypercorn.config.Config"),
    ],
)
async def test_bad_arguments(args: tuple[Any, ...], error: type, message: str) -> None:
    async with graceful_scope(**NO_SIGNALS) as scope:
        token = scope.token
        call: list[Any] = [token if a is None else a for a in args]
        with pytest.raises(error, match=message):
            await serve(*call)


@pytest.mark.parametrize("limit", [None, "1000", True])
async def test_a_keep_alive_limit_that_is_not_a_number_is_refused(
    limit: object,
) -> None:
    config = config_for("127.0.0.1:0")
    config.keep_alive_max_requests = limit  # type: ignore[assignment]
    async with graceful_scope(**NO_SIGNALS) as scope:
        with pytest.raises(TypeError, match="keep_alive_max_requests must be a number"):
            await scope.start(serve, hello, config)  # not served: refused at once


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("certfile", "x.pem", "TLS"),
        ("quic_bind", ["127.0.0.1:0"], "QUIC"),
        ("max_requests", 10, "max_requests"),
    ],
)
async def test_unsupported_config(setting: str, value: object, message: str) -> None:
    config = config_for("127.0.0.1:0")
    setattr(config, setting, value)
    if setting == "certfile":
        config.keyfile = "x.key"
    async with graceful_scope(**NO_SIGNALS) as scope:
        with pytest.raises(ValueError, match=message):
            await serve(scope.token, hello, config)


async def test_lifespan_shutdown_runs_before_dependencies_stop() -> None:
    events: list[str] = []

    async def db(token: ShutdownToken, *, task_status: TaskStatus[None]) -> None:
        task_status.started()
        try:
            await anyio.sleep_forever()
        finally:
            events.append("db closed")

    async def app(
        scope: Message,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        assert scope["type"] == "lifespan"
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        events.append("lifespan shutdown")
        await send({"type": "lifespan.shutdown.complete"})

    async with graceful_scope(**NO_SIGNALS) as scope:
        await scope.start(db)
        await scope.start(serve, app, config_for("127.0.0.1:0"))
        scope.request_shutdown("test over")
    assert events == ["lifespan shutdown", "db closed"]
    assert [s.outcome for s in scope.report.services] == ["stopped", "returned"]


async def test_a_failed_lifespan_startup_fails_start() -> None:
    async def app(
        scope: Message,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})

    returned = []
    with pytest.raises(ExceptionGroup) as caught:
        async with graceful_scope(**NO_SIGNALS) as scope:
            returned.append(await scope.start(serve, app, config_for("127.0.0.1:0")))
    assert returned == []  # never listened
    leaves = []
    pending: list[BaseException] = [caught.value]
    while pending:
        error = pending.pop()
        if isinstance(error, BaseExceptionGroup):
            pending.extend(error.exceptions)
        else:
            leaves.append(error)
    (failure,) = leaves  # hypercorn's error, alone
    assert type(failure).__name__ == "LifespanFailureError"
    assert "no database" in str(failure)


# Virtual time: no client here, so nothing waits on a real socket.
@pytest.mark.parametrize(
    "anyio_backend", [("trio", {"clock": MockClock(autojump_threshold=0)})]
)
async def test_a_lifespan_shutdown_cut_by_the_deadline_gets_cancel_timeout() -> None:
    finished: list[float] = []

    async def app(
        scope: Message,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await anyio.sleep(5)  # a slow shutdown: past the drain deadline
        finished.append(anyio.current_time())
        await send({"type": "lifespan.shutdown.complete"})

    async with graceful_scope(
        drain_timeout=1, cancel_timeout=10, **NO_SIGNALS
    ) as scope:
        await scope.start(serve, app, config_for("127.0.0.1:0"))
        t0 = anyio.current_time()
        scope.request_shutdown("test over")
    assert finished == [t0 + 5]
    (service,) = scope.report.services
    assert service.cancelled_in_flight == ("serve: lifespan shutdown",)


def _lifespan_noting_frozen(frozen: list[int]) -> Callable[..., Awaitable[None]]:
    """An app whose lifespan shutdown (after the drain) notes gc's frozen count."""

    async def app(
        scope: Message,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        frozen.append(gc.get_freeze_count())
        await send({"type": "lifespan.shutdown.complete"})

    return app


async def test_the_drain_leaves_the_heap_of_before_out_of_collections() -> None:
    # Full collections walking every idle connection's objects made most of a
    # drain with thousands of them (bench/scale.py); after serve(), the
    # collector sees them all again.
    frozen: list[int] = []
    # From Python 3.12 on, the interpreter freezes a few hundred objects itself.
    before = gc.get_freeze_count()
    async with graceful_scope(**NO_SIGNALS) as scope:
        await scope.start(
            serve, _lifespan_noting_frozen(frozen), config_for("127.0.0.1:0")
        )
        scope.request_shutdown("test over")
    assert frozen[0] > before + 1000  # the heap, thousands of objects
    assert gc.get_freeze_count() <= before


@pytest.mark.parametrize("collector", ["frozen by the process", "disabled"])
async def test_a_collector_the_process_manages_is_left_alone(collector: str) -> None:
    frozen: list[int] = []
    if collector == "disabled":
        gc.disable()
    else:
        gc.freeze()
    try:
        before = gc.get_freeze_count()
        # Tracked by the collector, made after the process's freeze: a freeze at
        # the drain would count them.
        made_since: list[list[int]] = [[] for _ in range(10_000)]
        async with graceful_scope(**NO_SIGNALS) as scope:
            await scope.start(
                serve, _lifespan_noting_frozen(frozen), config_for("127.0.0.1:0")
            )
            scope.request_shutdown("test over")
        assert len(frozen) == 1
        assert frozen[0] <= before  # (frozen objects may have been freed)
        assert gc.get_freeze_count() <= before
        assert len(made_since) == 10_000
        assert gc.isenabled() == (collector != "disabled")
    finally:
        gc.unfreeze()
        gc.enable()


@pytest.mark.parametrize("limit", [math.inf, math.nan])
async def test_a_keep_alive_limit_hypercorn_takes_still_closes_from_the_trigger(
    limit: float,
) -> None:
    # hypercorn serves with any number it can compare (inf: no limit); the
    # trigger's Connection: close must not fail on it (and hang the shutdown).
    begun, respond = anyio.Event(), anyio.Event()

    async def app(
        scope: Message,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] == "http":
            begun.set()
            await respond.wait()
        await hello(scope, receive, send)

    config = config_for("127.0.0.1:0")
    config.keep_alive_max_requests = limit  # type: ignore[assignment]
    with anyio.fail_after(10):
        async with graceful_scope(**NO_SIGNALS) as scope:
            (url,) = await scope.start(serve, app, config)
            host, port = url.removeprefix("http://").rsplit(":", 1)
            async with await anyio.connect_tcp(host, int(port)) as client:
                await client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                await begun.wait()
                scope.request_shutdown("test over")
                respond.set()
                received = b""
                with contextlib.suppress(anyio.EndOfStream):
                    while True:
                        received += await client.receive()
    head = received.lower().split(b"\r\n\r\n")[0]
    assert head.startswith(b"http/1.1 200")
    assert b"\r\nconnection: close" in head
    assert scope.report.clean
