"""The server's side of the ASGI calling convention, for the middleware tests.

``call_http`` runs one request through an app and keeps what it sent;
``FakeWebSocket`` is one websocket client as a server would present it. And
the app's side of one: ``answer_lifespan`` for the test apps.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import anyio

from shutdown_scope import ShutdownToken
from shutdown_scope.asgi import ASGIApp, Message


def http_scope(
    path: str = "/", *, method: str = "GET", http_version: str = "1.1"
) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": http_version,
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"example.test")],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
    }


def websocket_scope(path: str = "/chat") -> dict[str, Any]:
    scope = http_scope(path)
    del scope["method"]
    return {**scope, "type": "websocket", "scheme": "ws", "subprotocols": []}


@dataclass
class HttpExchange:
    """One request: an empty body in, the app's messages out.

    With ``token``, ``in_flight_at_send`` records its in-flight count at each send.
    """

    token: ShutdownToken | None = None
    sent: list[Message] = field(default_factory=list)
    in_flight_at_send: list[int] = field(default_factory=list)

    async def receive(self) -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(self, message: Message) -> None:
        self.sent.append(message)
        if self.token is not None:
            self.in_flight_at_send.append(self.token.in_flight_count)

    @property
    def status(self) -> int:
        status: int = self.sent[0]["status"]
        return status

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(name, value) for name, value in self.sent[0]["headers"]]

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent[1:])


async def call_http(
    app: ASGIApp, scope: dict[str, Any], *, token: ShutdownToken | None = None
) -> HttpExchange:
    exchange = HttpExchange(token)
    await app(scope, exchange.receive, exchange.send)
    return exchange


class FakeWebSocket:
    """One websocket client: it connects, then stays until either side closes.

    A ``websocket.close`` from the app is answered with ``websocket.disconnect``
    (the close handshake); ``sent`` keeps each message with its time.
    """

    def __init__(self) -> None:
        self.sent: list[tuple[float, Message]] = []
        self.accepted = anyio.Event()
        self._inbox: deque[Message] = deque([{"type": "websocket.connect"}])
        self._arrived = anyio.Event()

    @property
    def messages(self) -> list[Message]:
        return [message for _, message in self.sent]

    def disconnect(self, code: int = 1000) -> None:
        """The client goes away (or answers a close)."""
        self._inbox.append({"type": "websocket.disconnect", "code": code})
        self._arrived.set()

    async def receive(self) -> Message:
        while not self._inbox:
            await self._arrived.wait()
            self._arrived = anyio.Event()
        return self._inbox.popleft()

    async def send(self, message: Message) -> None:
        self.sent.append((anyio.current_time(), message))
        if message["type"] == "websocket.accept":
            self.accepted.set()
        elif message["type"] == "websocket.close":
            self.disconnect(message.get("code", 1000))


async def answer_lifespan(receive: Any, send: Any) -> None:
    """An app's answer to a ``lifespan`` scope: started, then stopped."""
    while (await receive())["type"] != "lifespan.shutdown":
        await send({"type": "lifespan.startup.complete"})
    await send({"type": "lifespan.shutdown.complete"})
