"""ASGI middleware: readiness, in-flight tracking and a graceful end for requests.

``ShutdownMiddleware(app, token)`` works under any ASGI 3 server (hypercorn,
uvicorn, ...); ``shutdown_scope.hypercorn.serve`` applies it for you. What a
request sees of the service token's phases:

- RUNNING: each request runs inside ``token.in_flight("GET /path")`` (a
  websocket: ``"WEBSOCKET /path"``), so the drain waits for it.
- STOPPING, from the first trigger: the readiness path answers 503 and HTTP/1.x
  responses carry ``Connection: close``, so keep-alive clients go elsewhere;
  requests are still served.
- DRAINING: the server accepts no new connections; requests in flight finish;
  accepted websockets are closed with code 1001 (going away), spread over up to
  ``websocket_close_spread`` seconds so their clients do not reconnect at once.
- CANCELLING: the service is cancelled, with the requests that run inside it.

Every ``http`` and ``websocket`` scope carries the token under ``TOKEN_KEY``;
``token_from_scope(scope)`` returns it (``token_from_scope(scope, default=None)``
for code that also runs without the middleware). Long-lived handlers use it to end in
time, e.g. a server-sent events stream::

    async def events(scope: Scope, receive: Receive, send: Send) -> None:
        token = token_from_scope(scope)
        await send({"type": "http.response.start", "status": 200, "headers": SSE})
        chunk = {"type": "http.response.body", "more_body": True}
        with token.cancel_on(Phase.DRAINING):  # ends the stream, not the response
            async for event in feed():
                await send({**chunk, "body": event})
        await send({"type": "http.response.body", "body": b""})  # a clean end
"""

from __future__ import annotations

import contextlib
import math
import random
import signal
import time
import warnings
from collections.abc import Awaitable, Callable, MutableMapping
from types import MappingProxyType
from typing import Any, Final, TypeAlias, TypeVar, final, overload

import anyio

from ._flight import InFlight, open_flight
from ._phases import Phase
from ._signal_registry import is_registry_handler
from ._token import ShutdownToken

__all__ = [
    "TOKEN_KEY",
    "ServerOwnsSignalsWarning",
    "ShutdownMiddleware",
    "token_from_scope",
]

_Default = TypeVar("_Default")
_NO_DEFAULT: Final = object()

Scope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]
ASGIApp: TypeAlias = Callable[[Scope, Receive, Send], Awaitable[None]]

TOKEN_KEY: Final = "shutdown_scope.token"  # noqa: S105 -- a key, not a secret
"""The key of the service's ``ShutdownToken`` in each http and websocket scope."""

_new_unit = object.__new__
_monotonic = time.monotonic  # a global: no attribute lookup per request
_HTTP1: Final = frozenset({"1.0", "1.1"})  # HTTP/2 and 3 forbid Connection headers
_CLOSE: Final = (b"connection", b"close")
_GOING_AWAY: Final = MappingProxyType(
    {"type": "websocket.close", "code": 1001, "reason": "server shutting down"}
)
# A client that does not answer our close frame: after this long (or a quarter
# of the drain left), the app is told it went away (1006) and ends.
_CLOSE_HANDSHAKE: Final = 2.0
_ABNORMAL_CLOSURE: Final = MappingProxyType(
    {"type": "websocket.disconnect", "code": 1006}
)


class ServerOwnsSignalsWarning(UserWarning):
    """The server, not a ``graceful_scope``, handles SIGTERM.

    Issued once per ``ShutdownMiddleware``, at its first call (the lifespan
    startup, or the first request), when the SIGTERM handler in force is a
    Python handler that no ``graceful_scope`` installed: uvicorn's, hypercorn's
    or gunicorn's own. The server then stops on SIGTERM without the token ever
    leaving RUNNING: no 503 on the readiness path, no announce delay, no
    ``Connection: close``, and the scope's report does not see that shutdown.
    """


@overload
def token_from_scope(scope: Scope) -> ShutdownToken: ...
@overload
def token_from_scope(
    scope: Scope, *, default: _Default
) -> ShutdownToken | _Default: ...
def token_from_scope(scope: Scope, *, default: object = _NO_DEFAULT) -> object:
    """The service's token, from the scope of a request under ``ShutdownMiddleware``.

    Args:
        scope: the ASGI connection scope of an ``http`` or ``websocket`` request.
        default: returned when the scope has no token (the app runs without
            the middleware, under a plain server); without it, that raises.

    Raises:
        LookupError: the scope has no token and no ``default`` was given: the
            app is not wrapped.
    """
    token = scope.get(TOKEN_KEY)
    if not isinstance(token, ShutdownToken):
        if default is not _NO_DEFAULT:
            return default
        msg = (
            f"no ShutdownToken in this ASGI scope (key {TOKEN_KEY!r}): wrap the app"
            " in shutdown_scope.asgi.ShutdownMiddleware(app, token)"
            " (shutdown_scope.hypercorn.serve and shutdown_scope.uvicorn.serve"
            " do this for you)"
        )
        raise LookupError(msg)
    return token


def _warn_if_the_server_owns_sigterm() -> None:
    handler = signal.getsignal(signal.SIGTERM)
    # SIG_DFL, SIG_IGN or a C handler (None): nobody turns SIGTERM into a
    # graceful stop behind the scope's back.
    if not callable(handler) or is_registry_handler(handler):
        return
    owner = getattr(handler, "__qualname__", None) or type(handler).__qualname__
    module = getattr(handler, "__module__", None)
    name = f"{module}.{owner}" if module else owner
    msg = (
        f"SIGTERM is handled by {name}, not by a graceful_scope: the server will"
        " stop on SIGTERM without the token ever leaving RUNNING (no 503 on the"
        " readiness path, no announce delay, no Connection: close) and the"
        " scope's report will not see that shutdown. Serve the app with"
        " shutdown_scope.uvicorn.serve or shutdown_scope.hypercorn.serve inside"
        " graceful_scope() (or run it with `shutdown-scope serve MODULE:APP`)"
    )
    warnings.warn(msg, ServerOwnsSignalsWarning, stacklevel=3)


def _with_connection_close(start: Message) -> Message:
    """A copy of ``start`` (an ``http.response.start``) with ``Connection: close``."""
    headers = [
        (name, value)
        for name, value in start.get("headers", ())
        if name.lower() != b"connection"
    ]
    headers.append(_CLOSE)
    return {**start, "headers": headers}


@final
class _WebSocket:
    """One websocket's state, seen from the messages between app and server."""

    __slots__ = (
        "_lock",
        "_receive",
        "_receiving",
        "_send",
        "accepted",
        "close_due",
        "closed",
        "closed_by_us",
        "disconnected",
        "given_up",
    )

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        # Sends are serialised: the close must not interleave with an app send.
        self._lock = anyio.Lock(fast_acquire=True)
        self.accepted = self.closed = self.close_due = self.closed_by_us = False
        self.disconnected = anyio.Event()
        self.given_up = False
        self._receiving: anyio.CancelScope | None = None

    async def receive(self) -> Message:
        if not self.given_up:
            with anyio.CancelScope() as self._receiving:
                message = await self._receive()
                if message["type"] == "websocket.disconnect":
                    self.closed = True
                    self.disconnected.set()
                return message
        # The client never answered our close: the app hears it went away.
        return dict(_ABNORMAL_CLOSURE)

    def give_up(self) -> None:
        """End the closing handshake the client does not answer."""
        self.given_up = True
        if self._receiving is not None:
            self._receiving.cancel()

    async def send(self, message: Message) -> None:
        async with self._lock:
            if self.closed_by_us:
                return  # closed by us: the app learns of it from receive()
            kind = message["type"]
            if kind == "websocket.accept":
                self.accepted = True
            elif kind == "websocket.close":
                self.closed = True
            await self._send(message)
            if self.close_due and kind == "websocket.accept":
                await self._close_going_away()  # accepted after its close time

    async def close_going_away(self) -> None:
        async with self._lock:
            if not self.closed:
                self.close_due = True
                if self.accepted:
                    await self._close_going_away()

    async def _close_going_away(self) -> None:
        self.closed = self.closed_by_us = True
        await self._send(dict(_GOING_AWAY))  # a copy: a server may keep it


@final
class ShutdownMiddleware:
    """ASGI 3 middleware that ties requests to a service's ``ShutdownToken``.

    Args:
        app: the ASGI 3 application to wrap.
        token: the token of the service that runs the server.
        readiness_path: a path answered here, never passed to the app: 200
            ``ready`` until the first trigger, then 503 with the reason.
        websocket_close_spread: at most this many seconds (and at most a
            quarter of the drain left) over which websockets are closed.

    Raises:
        TypeError, ValueError: an invalid argument (the message states the rule).
    """

    __slots__ = (
        "_app",
        "_node",
        "_readiness_path",
        "_signals_checked",
        "_spread",
        "_token",
        "_wraps",
    )

    def __init__(
        self,
        app: ASGIApp,
        token: ShutdownToken,
        *,
        readiness_path: str | None = None,
        websocket_close_spread: float = 1.0,
    ) -> None:
        if not callable(app):
            msg = f"app must be an ASGI 3 application (a callable), not {app!r}"
            raise TypeError(msg)
        if not isinstance(token, ShutdownToken):
            msg = f"token must be a ShutdownToken, not {type(token).__name__}"
            raise TypeError(msg)
        if readiness_path is not None and not isinstance(readiness_path, str):
            msg = f"readiness_path must be a str or None, not {readiness_path!r}"
            raise TypeError(msg)
        if readiness_path is not None and not readiness_path.startswith("/"):
            msg = f"readiness_path must start with '/', got {readiness_path!r}"
            raise ValueError(msg)
        spread = websocket_close_spread
        if isinstance(spread, bool) or not isinstance(spread, (int, float)):
            msg = f"websocket_close_spread must be a number of seconds, not {spread!r}"
            raise TypeError(msg)
        if not (math.isfinite(spread) and spread >= 0):
            msg = f"websocket_close_spread must be finite and >= 0, got {spread!r}"
            raise ValueError(msg)
        self._app = app
        self._token = token
        self._node = token._node  # noqa: SLF001 -- the package's own
        self._readiness_path = readiness_path
        self._spread = float(spread)
        self._signals_checked = False
        self._wraps = True  # a copy of the scope, and send wrapped (HTTP/1.x)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection scope (the ASGI 3 interface)."""
        if not self._signals_checked:
            self._signals_checked = True
            _warn_if_the_server_owns_sigterm()
        kind = scope["type"]
        if kind != "http":
            if kind == "websocket":
                await self._websocket(scope, receive, send)
            else:  # lifespan, and whatever a later ASGI version adds
                await self._app(scope, receive, send)
            return
        # Every request runs this: inlined (each call or object saved counts).
        path: str = scope["path"]
        if path == self._readiness_path:
            await self._answer_readiness(scope, send)
            return
        token = self._token
        if self._wraps:
            # A shallow copy (ASGI: a middleware must not change the server's
            # scope); dict() clones a dict's table, cheaper than {**scope, ...}.
            scope = dict(scope)
            scope[TOKEN_KEY] = token
            if scope.get("http_version") in _HTTP1:
                server_send = send

                # Not token.ready: one property call fewer on every response.
                view = token._view  # noqa: SLF001 -- the package's own

                # A plain function returning send's awaitable: no extra coroutine.
                def send(message: Message) -> Awaitable[None]:
                    if (
                        message["type"] == "http.response.start"
                        and view.reason is not None
                    ):
                        return server_send(_with_connection_close(message))
                    return server_send(message)

        else:  # under serve()'s own server: see _under_serve()
            scope[TOKEN_KEY] = token
        # open_flight() and InFlight.__exit__(), inlined: two calls fewer.
        node = self._node
        unit = _new_unit(InFlight)
        unit._node = node  # noqa: SLF001 -- the package's own
        unit._label = scope["method"]  # noqa: SLF001
        unit._detail = path  # noqa: SLF001
        started = node.started
        started[unit] = _monotonic()
        try:
            await self._app(scope, receive, send)
        finally:
            del started[unit]
            if node.idle_event is not None and not started:
                node._left()  # noqa: SLF001

    def _under_serve(self) -> None:
        """Under ``serve()``'s own servers: no send wrapper, no scope copy.

        The server adds ``Connection: close`` itself once the token is not
        ready. And the token goes into the server's own scope, not a copy:
        each of these servers (hypercorn's h11, h2 and websocket streams,
        uvicorn's h11, httptools and websocket protocols) builds a new scope
        for one request alone, and what it reads back of it (the access log,
        HEAD, push, trailers) are keys of its own, which the middleware never
        changes; the app sees the scope as it would under the bare server.
        Any other server keeps the copy the ASGI spec asks of a middleware.
        """
        self._wraps = False

    async def _answer_readiness(self, scope: Scope, send: Send) -> None:
        token = self._token
        ready = token.ready
        body = b"ready\n" if ready else f"shutting down: {token.reason}\n".encode()
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", b"%d" % len(body)),
            (b"cache-control", b"no-store"),
        ]
        if not ready and scope.get("http_version") in _HTTP1:
            headers.append(_CLOSE)
        status = 200 if ready else 503
        start = {"type": "http.response.start", "status": status, "headers": headers}
        await send(start)
        head = scope.get("method") == "HEAD"
        await send({"type": "http.response.body", "body": b"" if head else body})

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = self._token
        ws = _WebSocket(receive, send)
        error: Exception | None = None
        unit = open_flight(self._node, "WEBSOCKET", scope["path"])
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._close_when_draining, ws)
                # The app's own exception reaches the server as it was raised,
                # not wrapped in the task group's ExceptionGroup.
                if self._wraps:
                    scope = {**scope}
                scope[TOKEN_KEY] = token
                try:
                    await self._app(scope, ws.receive, ws.send)
                except Exception as exc:  # noqa: BLE001 -- re-raised below
                    error = exc
                tg.cancel_scope.cancel()
        finally:
            unit.__exit__()
        if error is not None:
            try:
                raise error
            finally:
                del error  # no reference cycle through the traceback

    async def _close_when_draining(self, ws: _WebSocket) -> None:
        token = self._token
        await token.wait_phase(Phase.DRAINING)
        # Jitter, within the first quarter of the drain left: leaves time for
        # the apps to end after their close.
        spread = min(self._spread, (token.deadline - anyio.current_time()) / 4)
        if spread > 0:
            await anyio.sleep(random.random() * spread)  # noqa: S311 -- not crypto
        # OSError: the client is already gone (uvicorn: ClientDisconnected).
        with contextlib.suppress(OSError):
            await ws.close_going_away()
        if not ws.closed_by_us:
            return
        # A client that vanished (a NAT timeout, a sleeping laptop) never
        # answers the close; it must not hold the drain until the deadline.
        wait = min(_CLOSE_HANDSHAKE, (token.deadline - anyio.current_time()) / 4)
        with anyio.move_on_after(wait):
            await ws.disconnected.wait()
        ws.give_up()
