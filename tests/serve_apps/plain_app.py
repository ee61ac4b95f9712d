"""Apps for ``tests/test_serve_command.py``, served by ``shutdown-scope serve``.

``app`` is plain ASGI: ``/hello``; ``/stream``, a tick every 50 ms that ends
with ``bye`` when the drain begins (``ticks``, which the framework apps share);
``/hang``, which never answers and ignores the drain (cut at the deadline);
``/block``, which blocks the event loop for 60 s (the watchdog exits hard); and a
lifespan that prints ``lifespan: startup`` and ``lifespan: shutdown``. The
other names are what the bad-input tests point the command at.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import anyio

from shutdown_scope import Phase, ShutdownToken
from shutdown_scope.asgi import token_from_scope

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

TICK = 0.05


async def ticks(token: ShutdownToken) -> AsyncIterator[bytes]:
    """``tick N`` lines until the drain begins, then ``bye``: the stream ends."""
    n = 0
    while token.phase < Phase.DRAINING:
        n += 1
        yield f"tick {n}\n".encode()
        with anyio.move_on_after(TICK):
            await token.wait_phase(Phase.DRAINING)
    yield b"bye\n"


async def _start(send: Send, status: int = 200) -> None:
    headers = [(b"content-type", b"text/plain")]
    await send({"type": "http.response.start", "status": status, "headers": headers})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            print("lifespan: startup", flush=True)  # noqa: T201 -- a marker the tests wait for
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            print("lifespan: shutdown", flush=True)  # noqa: T201 -- a marker the tests wait for
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """The plain ASGI app."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/stream":
        await _start(send)
        async for chunk in ticks(token_from_scope(scope)):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/hang":
        await _start(send)
        await send(
            {"type": "http.response.body", "body": b"hanging\n", "more_body": True}
        )
        await anyio.sleep_forever()
    elif path == "/block":
        await _start(send)
        await send(
            {"type": "http.response.body", "body": b"blocking\n", "more_body": True}
        )
        time.sleep(60)  # noqa: ASYNC251 -- blocks the loop on purpose
    else:
        await _start(send, 200 if path == "/hello" else 404)
        await send({"type": "http.response.body", "body": b"hello plain\n"})


def make_app() -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """A factory: ``--factory plain_app:make_app``."""
    print("factory: called", flush=True)  # noqa: T201 -- a marker the tests wait for
    return app


def failing_factory() -> None:
    """A factory that raises."""
    msg = "no database configured"
    raise RuntimeError(msg)


async def async_factory() -> object:
    """A factory that is a coroutine function (not supported)."""
    return app


class App:
    """A class: the command wants an instance (or --factory)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve as ``app``."""
        await app(scope, receive, send)


def wsgi_app(
    environ: dict[str, Any], start_response: Callable[..., Any]
) -> list[bytes]:
    """A WSGI application, which the command does not serve."""
    start_response("200 OK", [])
    return [b"wsgi\n"]


NOT_AN_APP = "a string"


async def failing_startup(scope: Scope, receive: Receive, send: Send) -> None:
    """An app whose lifespan startup fails."""
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "cache unreachable"})
        return
    await app(scope, receive, send)


async def failing_shutdown(scope: Scope, receive: Receive, send: Send) -> None:
    """An app whose lifespan shutdown fails (its cleanup went wrong)."""
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        print("lifespan: shutdown", flush=True)  # noqa: T201 -- a marker the tests wait for
        await send({"type": "lifespan.shutdown.failed", "message": "pool not closed"})
        return
    await app(scope, receive, send)
