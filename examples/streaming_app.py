"""``examples/work_app.py`` with a server-sent event stream and a websocket echo.

Served by ``examples/hypercorn_app.py`` and ``examples/uvicorn_app.py``; the routes
it adds to ``/work?ms=N``:

* ``/events``: a server-sent event stream, a tick every 100 ms; when the drain
  begins it sends a final ``bye`` event and ends (the early notice: it does not
  wait to be cut at the deadline); ``/events?bye_after_ms=N`` first takes N
  more milliseconds (at most 60 s), as a stream finishing its current work;
* ``/ws``: a websocket echo; at the drain it gets a close frame 1001 and prints
  the code the server reports when it is closed.
"""

from __future__ import annotations

from urllib.parse import parse_qs

import anyio
import work_app
from work_app import Receive, Scope, Send

from shutdown_scope import Phase
from shutdown_scope.asgi import token_from_scope

__all__ = ["TICK", "App"]

TICK = 0.1


class App(work_app.App):
    """``examples/work_app.py`` with a server-sent event stream and a websocket."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Route one ASGI connection."""
        if scope["type"] == "websocket":
            await _echo(receive, send)
        elif scope["type"] == "http" and scope["path"] == "/events":
            await _events(scope, send)
        else:
            await super().__call__(scope, receive, send)


async def _events(scope: Scope, send: Send) -> None:
    token = token_from_scope(scope)
    bye_after = parse_qs(scope["query_string"].decode()).get("bye_after_ms", ["0"])
    if not bye_after[0].isdigit() or int(bye_after[0]) > work_app.MAX_WORK_MS:
        await work_app.respond(send, 400, b"bye_after_ms must be 0..60000\n")
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream")],
        }
    )
    n = 0
    with token.cancel_on(Phase.DRAINING):
        while True:
            n += 1
            chunk = f"data: tick {n}\n\n".encode()
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await anyio.sleep(TICK)
    await anyio.sleep(int(bye_after[0]) / 1000)
    final = b"event: bye\ndata: server shutting down\n\n"
    await send({"type": "http.response.body", "body": final})


async def _echo(receive: Receive, send: Send) -> None:
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            print(f"websocket: closed with {message.get('code')}", flush=True)
            return
        await send({"type": "websocket.send", "text": message.get("text") or ""})
