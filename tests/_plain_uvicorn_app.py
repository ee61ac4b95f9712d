"""An app for the plain ``uvicorn`` command, with ShutdownMiddleware in a scope.

``python -m uvicorn --app-dir tests _plain_uvicorn_app:app``: the lifespan opens
a ``graceful_scope(signals=())`` and wraps the routes in ``ShutdownMiddleware``
with its token, while uvicorn keeps SIGTERM for itself. ``/token`` answers
``token: yes`` or ``token: no``, as ``token_from_scope(scope, default=None)``
finds the token; ``/plain/token`` is the same handler without the middleware.
At the lifespan shutdown it prints ``REPORT`` and the scope's report as JSON.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from shutdown_scope import graceful_scope
from shutdown_scope.asgi import ShutdownMiddleware, token_from_scope

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


async def routes(scope: Message, receive: Receive, send: Send) -> None:
    found = token_from_scope(scope, default=None) is not None
    body = b"token: yes\n" if found else b"token: no\n"
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


class App:
    """The middleware is made in the lifespan, around the scope's token."""

    def __init__(self) -> None:
        self.middleware: ShutdownMiddleware | None = None

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            async with graceful_scope(signals=(), hard_exit=False) as shutdown:
                self.middleware = ShutdownMiddleware(
                    routes, shutdown.token, readiness_path="/readyz"
                )
                await receive()
                await send({"type": "lifespan.startup.complete"})
                await receive()
                shutdown.request_shutdown("uvicorn sent lifespan.shutdown")
            sys.stdout.write(f"REPORT {json.dumps(shutdown.report.as_dict())}\n")
            sys.stdout.flush()
            await send({"type": "lifespan.shutdown.complete"})
        elif scope["path"].startswith("/plain/") or self.middleware is None:
            await routes(scope, receive, send)
        else:
            await self.middleware(scope, receive, send)


app = App()
