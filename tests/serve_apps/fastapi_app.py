"""A FastAPI app for ``shutdown-scope serve``: ``/hello``, ``/stream``."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from plain_app import ticks

from shutdown_scope.asgi import token_from_scope

app = FastAPI()


@app.get("/hello")
async def hello() -> dict[str, str]:
    """A JSON answer."""
    return {"hello": "fastapi"}


@app.get("/stream")
async def stream(request: Request) -> StreamingResponse:
    """Ticks until the drain begins, then ``bye``."""
    return StreamingResponse(
        ticks(token_from_scope(request.scope)), media_type="text/plain"
    )
