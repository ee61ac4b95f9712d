"""The plain ASGI app that ``bench/drain.py`` serves with the bare hypercorn CLI.

``python -m hypercorn --worker-class asyncio|trio --bind 127.0.0.1:0
bench/_bare_app.py:app`` serves it. It does not import shutdown_scope: its
``/work?ms=N`` route is the one of ``examples/hypercorn_app.py`` (works N
milliseconds, at most 60 s, and answers ``done N``), and its lifespan prints the
same lines, ``lifespan: startup`` and, at shutdown, how many ``/work`` requests
it read and answered, so both servers of the bench are counted the same way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

import anyio

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_WORK_MS = 60_000

__all__ = ["App", "app"]


class App:
    """The ASGI application; counts the ``/work`` requests it read and answered."""

    def __init__(self) -> None:
        self.received = 0
        self.answered = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Route one ASGI connection."""
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http" and scope["path"] == "/work":
            self.received += 1
            await _work(scope, send)
            self.answered += 1
        else:
            await _respond(send, 404, b"not found\n")

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                print("lifespan: startup", flush=True)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                print(
                    f"lifespan: shutdown; /work requests: {self.received} read,"
                    f" {self.answered} answered",
                    flush=True,
                )
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _respond(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _work(scope: Scope, send: Send) -> None:
    query = parse_qs(scope["query_string"].decode())
    ms = query.get("ms", ["0"])[0]
    if not ms.isdigit() or int(ms) > MAX_WORK_MS:
        await _respond(send, 400, b"ms must be 0..60000\n")
        return
    await anyio.sleep(int(ms) / 1000)
    await _respond(send, 200, f"done {ms}\n".encode())


app = App()
