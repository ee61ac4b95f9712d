"""Serve an ASGI app with uvicorn's protocols under a shutdown scope (asyncio).

``await scope.start(serve, app, config)`` serves ``app`` with uvicorn's HTTP/1.1
(h11 or httptools) and websocket protocols, configured by a ``uvicorn.Config``,
and follows the phases of the service's token exactly as
``shutdown_scope.hypercorn.serve`` does:

* **RUNNING**: serve. ``started()`` reports the bound addresses.
* **STOPPING** (the scope's ``announce_delay``): keep accepting and serving, but
  readiness answers 503 and every response carries ``Connection: close``.
* **DRAINING**: listeners close, after the connections already waiting in the
  kernel's accept queue are taken; requests in flight run to completion; idle
  keep-alive connections, and connections stalled half-way through a request,
  are closed and do not hold the drain (a connection that has sent nothing yet
  gets a second from its accept to send its first request); websockets get a
  close frame 1001. Then the app's ASGI lifespan shutdown runs, before services
  started earlier are asked to stop.
* **Drain deadline**: the scope cancels what is still running (uvicorn's
  ``timeout_graceful_shutdown`` is not used); the cancelled requests are
  reported by label, and the lifespan shutdown still runs, bounded by
  ``cancel_timeout``.

The scope owns the signals: uvicorn's ``Server`` is not used, so it neither
installs its SIGTERM and SIGINT handlers nor raises them again at the end.
uvicorn runs on asyncio only; under Trio ``serve()`` raises ``RuntimeError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
from anyio.abc import TaskStatus

from ._extras import missing_extra

try:
    from uvicorn.config import Config
except ModuleNotFoundError as _missing:
    raise missing_extra(_missing, "uvicorn") from _missing

from ._listeners import StartedWith, check_token_and_app, describe_socket, serve_sockets
from ._token import ShutdownToken
from ._uvicorn_compat import (
    LifespanStartupError,
    UvicornServer,
    is_http_protocol,
    loaded_copy,
)
from .asgi import ShutdownMiddleware
from .tcp import _clear_stale_socket, _inherited

__all__ = ["LifespanStartupError", "serve"]

# How long a websocket client may take to answer the close frame 1001 at the
# drain (ShutdownMiddleware's own wait): at most this, and a quarter of the
# drain left.
_CLOSE_ANSWER_WAIT = 2.0
_UNIX_SOCKET_MODE = 0o666  # what uvicorn gives the socket file it binds


def _check(token: object, app: object, config: object) -> None:
    native = anyio.lowlevel.current_token().native_token
    if not isinstance(native, asyncio.AbstractEventLoop):
        msg = (
            "shutdown_scope.uvicorn.serve runs on asyncio only: uvicorn is an"
            " asyncio server. Run the scope on asyncio (the default of"
            " shutdown_scope.run), or serve with shutdown_scope.hypercorn.serve,"
            " which runs on Trio too"
        )
        raise RuntimeError(msg)  # noqa: TRY004 -- misuse: the wrong event loop
    check_token_and_app(token, app)
    if not isinstance(config, Config):
        msg = f"config must be a uvicorn.Config, not {config!r}"
        raise TypeError(msg)
    _check_config(config)


def _check_config(config: Config) -> None:
    """Refuse what ``serve()`` does not do, with the reason and what to do instead.

    Raises:
        ValueError: the first unsupported setting.
    """
    refusals = [
        (
            config.is_ssl,
            (
                "serve() does not terminate TLS; terminate TLS in front of the service"
                " (ingress, load balancer) and bind plain HTTP"
            ),
        ),
        (
            config.http2 or config.http == "zttp",
            (
                "serve() serves HTTP/1.1 with uvicorn's h11 or httptools protocol;"
                " for HTTP/2 use shutdown_scope.hypercorn.serve"
            ),
        ),
        (
            config.workers > 1 or config.reload,
            (
                "config.workers and config.reload start processes, which serve() does"
                " not manage; run one process per worker, and reload through the"
                " shutdown-scope launcher"
            ),
        ),
        (
            config.limit_max_requests is not None,
            (
                "config.limit_max_requests restarts uvicorn's worker, which serve()"
                " does not manage; restart through the launcher's reload"
            ),
        ),
        (
            config.factory,
            "config.factory: call the factory yourself and pass the app it makes",
        ),
        (
            config.interface in ("asgi2", "wsgi"),
            f"config.interface={config.interface!r}: serve() serves ASGI 3 apps",
        ),
        (
            config.fd is not None and config.uds is not None,
            "config.fd and config.uds are both set: give one",
        ),
    ]
    for refused, msg in refusals:
        if refused:
            raise ValueError(msg)
    if isinstance(config.http, type) and not is_http_protocol(config.http):
        msg = (
            f"config.http={config.http!r}: serve() drives uvicorn's own HTTP"
            " protocols only ('auto', 'h11', 'httptools')"
        )
        raise ValueError(msg)


_SocketFile = tuple[Path, tuple[int, int]]  # a unix socket's path, device and inode


def _listen(config: Config) -> tuple[socket.socket, _SocketFile | None]:
    """Bind (or take over ``config.fd``) as uvicorn does.

    Returns:
        The listening socket, and the socket file bound for ``config.uds``.
    """
    if config.fd is not None:
        where = f"fd {config.fd}"
    elif config.uds is not None:
        where = f"unix:{config.uds}"
    else:
        host = config.host or "0.0.0.0"  # noqa: S104 -- uvicorn's own default
        where = f"[{host}]:{config.port}" if ":" in host else f"{host}:{config.port}"
    try:
        sock = _bind(config)
        try:
            sock.listen(config.backlog)
            sock.setblocking(False)  # noqa: FBT003 -- the stdlib signature
        except BaseException:
            sock.close()
            raise
    except OSError as error:
        msg = f"uvicorn cannot listen on {where}: {error.strerror or error}"
        raise OSError(error.errno, msg) from None
    if sock.family != socket.AF_UNIX or config.uds is None or config.fd is not None:
        return sock, None
    info = Path(config.uds).stat()
    return sock, (Path(config.uds), (info.st_dev, info.st_ino))


def _bind(config: Config) -> socket.socket:
    if config.fd is not None:
        # Taken over (closed at the end, so the address stops accepting); the
        # family and type come from the socket itself.
        sock = socket.socket(fileno=config.fd)
        if sock.type != socket.SOCK_STREAM:
            sock.detach()
            msg = f"config.fd={config.fd} is not a stream socket"
            raise ValueError(msg)
        return sock
    if config.uds is not None:
        path = Path(config.uds)
        _clear_stale_socket(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(path))
            path.chmod(_UNIX_SOCKET_MODE)
        except BaseException:
            sock.close()
            raise
        return sock
    host = config.host or "0.0.0.0"  # noqa: S104 -- uvicorn's own default
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, config.port))
    except BaseException:
        sock.close()
        raise
    return sock


async def serve(
    token: ShutdownToken,
    app: Any,
    config: Config,
    *,
    readiness_path: str | None = None,
    sockets: Sequence[socket.socket] | None = None,
    task_status: TaskStatus[list[str]] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` with uvicorn's protocols until the token's drain is over.

    A service: start it with ``await scope.start(serve, app, config)``. asyncio
    only.

    Args:
        token: the service's token (the scope passes it).
        app: an ASGI 3 application. It is served instead of ``config.app``,
            which uvicorn's ``Config`` requires (pass the same app).
        config: uvicorn's configuration, left unchanged. Binds ``host`` and
            ``port``, ``uds`` (a unix socket; a stale socket file is replaced)
            or ``fd`` (an inherited listening socket, taken over and closed at
            the end), unless ``sockets`` is given. ``timeout_graceful_shutdown``
            is not used: the scope's budgets rule.
        readiness_path: a path answered 200 while ready and 503 once shutdown
            has begun (for a Kubernetes readiness probe); None for no endpoint.
        sockets: listening sockets to serve instead of binding (such as those
            of ``shutdown_scope.systemd.listen_fds()``); closed at the end.
        task_status: ``started()`` with the served URLs, such as
            ``["http://127.0.0.1:8000"]``, once the app's lifespan startup is
            complete and the listeners accept.

    Raises:
        RuntimeError: not running on asyncio.
        TypeError: a wrong argument type.
        ValueError: a setting of ``config`` serve() does not support (TLS,
            HTTP/2, worker processes, reload, ``limit_max_requests``, a factory,
            a WSGI or ASGI 2 interface), or an unusable socket.
        OSError: an address cannot be bound (in use, say), before ``started()``.
        LifespanStartupError: the app's lifespan startup failed, before
            ``started()``.
    """
    _check(token, app, config)
    if not isinstance(app, ShutdownMiddleware):
        app = ShutdownMiddleware(app, token, readiness_path=readiness_path)
        # The server adds Connection: close from the trigger on (below), at
        # no cost per request until then.
        app._under_serve()  # noqa: SLF001 -- the package's own

    def close_answer_wait() -> float:
        # As ShutdownMiddleware waits for the answer to its own close frame.
        left = token.deadline - anyio.current_time()
        return min(_CLOSE_ANSWER_WAIT, left / 4)

    server = UvicornServer(
        loaded_copy(config, app), close_answer_wait=close_answer_wait
    )
    socket_file: _SocketFile | None = None
    if sockets is not None:
        listeners = _inherited(sockets)
    else:
        listener, socket_file = _listen(config)
        listeners = [listener]
    undo = token._view.on_trigger(  # noqa: SLF001 -- the package's own
        server.close_http1_after_each_response
    )
    try:
        urls = [f"http://{describe_socket(sock)}" for sock in listeners]
        started = StartedWith(task_status, urls)
        failed = await _serve_until_drained(token, server, listeners, started)
    finally:
        undo()
        for sock in listeners:
            sock.close()
        if socket_file is not None:
            # Only our own file: a successor may have bound a new one there.
            path, inode = socket_file
            with contextlib.suppress(OSError):
                info = path.lstat()
                if (info.st_dev, info.st_ino) == inode:
                    path.unlink()
    if failed is not None:
        raise failed


async def _serve_until_drained(
    token: ShutdownToken,
    server: UvicornServer,
    listeners: list[socket.socket],
    started: StartedWith,
) -> LifespanStartupError | None:
    """Serve until the drain is over; a failed lifespan startup is returned, so
    that it reaches the caller as it is, not inside the task group's."""

    async def after_connections() -> None:
        # Every accepted connection has its transport now; each is closed once
        # idle, and the drain waits for them all.
        await server.close_connections()
        await server.wait_requests()
        await server.lifespan.stop()

    # The drain stays held open (token.closes_itself) until this returns.
    with ExitStack() as closing:
        async with anyio.create_task_group() as background:
            background.start_soon(server.keep_headers_fresh)
            try:
                try:
                    await server.lifespan.start(background)
                except LifespanStartupError as error:
                    return error
                await serve_sockets(
                    token,
                    listeners,
                    server.handle,
                    on_drain=server.drain,
                    after_connections=after_connections,
                    hold=closing,
                    task_status=started,
                )
            finally:
                # Cut short (the deadline, an error): the app's requests are
                # cancelled, and it still gets its lifespan shutdown, within
                # the cleanup budget.
                with token.shield_cleanup():
                    server.cancel_requests()
                    await server.wait_requests()
                    await server.lifespan.stop()
                server.end()
    return None
