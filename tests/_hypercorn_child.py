"""A hypercorn app for tests/test_hypercorn_clients.py and test_hypercorn_lifespan.py.

A scope with two services: ``db`` (started first, prints ``db: closed`` when it
is stopped) and ``http`` (``shutdown_scope.hypercorn.serve``). It prints
``listening URL`` once serving and, at the end, ``REPORT {json}``. Events of
the app are printed as they happen (``lifespan: ...``, ``app: ...``); the
library logs to stderr, which the tests merge into the same pipe.

Routes:

* ``/big?mb=N``: a body of N MiB, sent in 64 KiB chunks;
* ``/upload``: reads the request body to its end, then answers;
* ``/ws``: a websocket that answers each text message ``big N`` with a binary
  message of N MiB, and echoes anything else;
* any other path: ``200 ok``; with the query ``hold`` it first waits until
  it is cancelled, with ``block`` it blocks the event loop (for a minute).

``--startup S`` makes the lifespan startup take S seconds (``inf``: forever),
``--shutdown S`` the lifespan shutdown.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

import anyio
from anyio.abc import TaskStatus
from hypercorn.config import Config

import shutdown_scope
from shutdown_scope import ServiceNotStartedError, ShutdownToken, graceful_scope
from shutdown_scope.hypercorn import serve

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

CHUNK = 64 * 1024


def say(text: str) -> None:
    sys.stdout.write(f"{text}\n")
    sys.stdout.flush()


async def sleep(seconds: float) -> None:
    if math.isinf(seconds):
        await anyio.sleep_forever()
    await anyio.sleep(seconds)


class App:
    """The ASGI app; see the module's docstring."""

    def __init__(self, startup: float, shutdown: float) -> None:
        self.startup = startup
        self.shutdown = shutdown

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "websocket":
            await _websocket(receive, send)
        elif scope["path"] == "/big":
            mb = int(parse_qs(scope["query_string"].decode())["mb"][0])
            await _big(send, mb)
        elif scope["path"] == "/upload":
            await _upload(receive, send)
        else:
            await _hold(scope["query_string"])
            await _answer(send, b"ok\n")

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        await receive()
        say("lifespan: startup begun")
        try:
            await sleep(self.startup)
        except anyio.get_cancelled_exc_class():
            say("lifespan: startup cancelled")
            raise
        say("lifespan: startup done")
        await send({"type": "lifespan.startup.complete"})
        await receive()
        say("lifespan: shutdown begun")
        try:
            await sleep(self.shutdown)
        except anyio.get_cancelled_exc_class():
            say("lifespan: shutdown cancelled")
            raise
        say("lifespan: shutdown done")
        await send({"type": "lifespan.shutdown.complete"})


async def _hold(query: bytes) -> None:
    if query == b"hold":
        say("app: holding")
        await anyio.sleep_forever()
    if query == b"block":
        say("app: blocking the event loop")
        time.sleep(60)  # noqa: ASYNC251 -- the point: only the watchdog can end it


async def _answer(send: Send, body: bytes) -> None:
    headers = [(b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _big(send: Send, mb: int) -> None:
    size = mb * 1024 * 1024
    headers = [(b"content-length", b"%d" % size)]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    say("app: sending big")
    chunk = b"x" * CHUNK
    for _ in range(size // CHUNK - 1):
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": chunk})
    say("app: big sent")


async def _upload(receive: Receive, send: Send) -> None:
    say("app: reading body")
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    await _answer(send, b"%d\n" % size)


async def _websocket(receive: Receive, send: Send) -> None:
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text") or ""
        if text.startswith("big "):
            say("app: sending big message")
            size = int(text.split()[1]) * 1024 * 1024
            await send({"type": "websocket.send", "bytes": b"x" * size})
            say("app: big message sent")
        else:
            await send({"type": "websocket.send", "text": text})


async def db(
    token: ShutdownToken, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    task_status.started()
    try:
        await anyio.sleep_forever()
    finally:
        say("db: closed")


async def main(options: argparse.Namespace) -> None:
    config = Config()
    config.bind = [options.bind]
    config.accesslog = None
    config.startup_timeout = config.shutdown_timeout = 3600
    async with graceful_scope(
        drain_timeout=options.drain,
        cancel_timeout=options.cancel,
    ) as scope:
        await scope.start(db, name="db")
        say("starting")
        app = App(options.startup, options.shutdown)
        try:
            urls = await scope.start(serve, app, config, name="http")
        except ServiceNotStartedError as error:
            say(f"not started: by_shutdown={error.by_shutdown}")
            raise
        say(f"listening {urls[0]}")
    say("REPORT " + json.dumps(scope.report.as_dict()))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["asyncio", "trio"], required=True)
    parser.add_argument("--bind", default="127.0.0.1:0")
    parser.add_argument("--drain", type=float, default=1.0)
    parser.add_argument("--cancel", type=float, default=5.0)
    parser.add_argument("--startup", type=float, default=0.0)
    parser.add_argument("--shutdown", type=float, default=0.0)
    options = parser.parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
    logging.getLogger("hypercorn").setLevel(logging.WARNING)
    shutdown_scope.run(functools.partial(main, options), backend=options.backend)
