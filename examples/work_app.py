"""The workload of the demo, the tests and the bench, as a plain ASGI app.

``/work?ms=N`` works N milliseconds (at most 60 s) and answers ``done N``. The
lifespan prints ``lifespan: startup`` and, at shutdown, how many ``/work``
requests the app read and answered, so a client-side count of answers can be
checked against it. It does not import shutdown_scope: ``bench/drain.py`` serves
it with the bare hypercorn CLI (``python -m hypercorn examples/work_app.py:app``)
as the baseline, and ``examples/hypercorn_app.py`` extends it.
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

__all__ = ["App", "Message", "Receive", "Scope", "Send", "app", "respond"]


class App:
    """The ASGI application; counts the ``/work`` requests it read and answered.

    Args:
        verbose: print each ``/work`` request as it is read.
    """

    def __init__(self, *, verbose: bool = False) -> None:
        self.verbose = verbose
        self.received = 0
        self.answered = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Route one ASGI connection."""
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http" and scope["path"] == "/work":
            self.received += 1
            if self.verbose:
                print(f"work: read {scope['query_string'].decode()}", flush=True)
            await _work(scope, send)
            self.answered += 1
        else:
            await respond(send, 404, b"not found\n")

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


async def respond(send: Send, status: int, body: bytes) -> None:
    """A whole plain-text response."""
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
        await respond(send, 400, b"ms must be 0..60000\n")
        return
    await anyio.sleep(int(ms) / 1000)
    await respond(send, 200, f"done {ms}\n".encode())


app = App()
