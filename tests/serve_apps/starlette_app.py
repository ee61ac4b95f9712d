"""A Starlette app for ``shutdown-scope serve``: ``/hello``, ``/stream``."""

from __future__ import annotations

from plain_app import ticks
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route

from shutdown_scope.asgi import token_from_scope


async def hello(request: Request) -> PlainTextResponse:
    """A plain answer."""
    return PlainTextResponse("hello starlette\n")


async def stream(request: Request) -> StreamingResponse:
    """Ticks until the drain begins, then ``bye``."""
    return StreamingResponse(
        ticks(token_from_scope(request.scope)), media_type="text/plain"
    )


app = Starlette(routes=[Route("/hello", hello), Route("/stream", stream)])
