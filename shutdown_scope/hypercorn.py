"""Serve an ASGI app with hypercorn under a shutdown scope.

``await scope.start(serve, app, config)`` serves ``app`` with hypercorn's
HTTP/1.1, HTTP/2 and websocket protocols, on the event loop the scope runs on
(asyncio or trio), and follows the phases of the service's token:

* **RUNNING**: serve. ``started()`` reports the bound addresses.
* **STOPPING** (the scope's ``announce_delay``): keep accepting and serving, but
  readiness answers 503 and every HTTP/1.x response carries
  ``Connection: close``, so load balancers and keep-alive clients move away.
* **DRAINING**: listeners close, after the connections already waiting in the
  kernel's accept queue are taken (closing a listener resets them); requests in
  flight run to completion; idle keep-alive connections, and connections stalled
  half-way through a request, are closed at once and do not hold the drain (a
  connection that has sent nothing yet gets a second from its accept to send
  its first request); websockets get a close frame 1001 (Going Away). Then the
  app's ASGI lifespan shutdown runs, before services started earlier (the app's
  dependencies) are asked to stop.
* **Drain deadline**: the scope cancels what is still running (hypercorn's own
  ``graceful_timeout`` is not used: on Python 3.12+ it is not honoured,
  hypercorn #308); a connection whose response is stuck writing to a client
  that stopped reading (hypercorn shields its writes) is reset; the cancelled
  requests are reported by label, and the lifespan shutdown still runs, within
  half of the cleanup window (services started earlier get the other half).

A shutdown that begins during the app's lifespan startup cancels the startup at
once: the server never serves, and ``scope.start()`` raises
``ServiceNotStartedError(by_shutdown=True)``.

The app is wrapped in :class:`shutdown_scope.asgi.ShutdownMiddleware`, which
tracks every request in flight and puts the token in each request's ASGI scope
(see that module).
"""

from __future__ import annotations

import copy
import functools
import logging
from contextlib import ExitStack
from typing import Any

import anyio
import anyio.abc
from anyio.abc import TaskStatus

from ._extras import missing_extra

try:
    from ._hypercorn_compat import (
        Config,
        asgi_app,
        close_http1_after_each_response,
        listen,
    )
except ModuleNotFoundError as _missing:
    raise missing_extra(_missing, "hypercorn") from _missing

from ._hypercorn_workers import Worker, current_worker
from ._listeners import StartedWith, check_token_and_app, describe_socket, serve_sockets
from ._phases import Phase
from ._token import ShutdownToken
from .asgi import ShutdownMiddleware

__all__ = ["serve"]

_logger = logging.getLogger("shutdown_scope")

_STARTUP_LABEL = "lifespan startup"
_SHUTDOWN_LABEL = "lifespan shutdown"
# Of the cleanup window left after the server was cut short: the part the
# app's lifespan shutdown may take (services started earlier get the rest).
_LIFESPAN_SHARE = 0.5


def _check(token: object, app: object, config: object) -> None:
    check_token_and_app(token, app)
    if not isinstance(config, Config):
        msg = f"config must be a hypercorn.config.Config, not {config!r}"
        raise TypeError(msg)
    limit = config.keep_alive_max_requests
    if isinstance(limit, bool) or not isinstance(limit, (int, float)):
        # Compared with each response's count; replaced at the trigger.
        msg = f"config.keep_alive_max_requests must be a number, not {limit!r}"
        raise TypeError(msg)
    if config.ssl_enabled or config.quic_bind:
        msg = (
            "serve() does not terminate TLS or QUIC yet; terminate TLS in front "
            "of the service (ingress, load balancer) and bind plain HTTP"
        )
        raise ValueError(msg)
    if config.max_requests is not None:
        msg = (
            "config.max_requests restarts hypercorn's worker processes, which "
            "serve() does not manage; restart through the launcher's reload"
        )
        raise ValueError(msg)


async def serve(
    token: ShutdownToken,
    app: Any,
    config: Config,
    *,
    readiness_path: str | None = None,
    task_status: TaskStatus[list[str]] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` with hypercorn until the token's drain is over.

    A service: start it with ``await scope.start(serve, app, config)``.

    Args:
        token: the service's token (the scope passes it).
        app: an ASGI 3 application.
        config: hypercorn's configuration. ``bind`` takes ``host:port``,
            ``unix:/path`` and ``fd://N`` (an inherited listening socket).
            ``graceful_timeout`` is not used: the scope's budgets rule.
        readiness_path: a path answered 200 while ready and 503 once shutdown
            has begun (for a Kubernetes readiness probe); None for no endpoint.
        task_status: ``started()`` with the served URLs, such as
            ``["http://127.0.0.1:8000"]``, once the app's lifespan startup is
            complete and the listeners accept.

    Raises:
        TypeError: a wrong argument type (also a ``keep_alive_max_requests``
            that is not a number).
        ValueError: TLS, QUIC or ``max_requests`` in ``config`` (not supported).
        OSError: an address cannot be bound (in use, say), before ``started()``.
    """
    _check(token, app, config)
    if not isinstance(app, ShutdownMiddleware):
        app = ShutdownMiddleware(app, token, readiness_path=readiness_path)
        # The worker's HTTP/1.1 protocols add Connection: close from the
        # trigger on (below), at no cost per request until then.
        app._under_serve()  # noqa: SLF001 -- the package's own
    # A copy: the caller's Config is not changed (the keep-alive limit is).
    config = copy.copy(config)
    undo = token._view.on_trigger(  # noqa: SLF001 -- the package's own
        functools.partial(close_http1_after_each_response, config)
    )
    try:
        await _serve(token, app, config, task_status)
    finally:
        undo()


async def _serve(
    token: ShutdownToken,
    app: ShutdownMiddleware,
    config: Config,
    task_status: TaskStatus[list[str]],
) -> None:
    worker = current_worker(asgi_app(app, config), config)
    sockets = listen(config)
    started = StartedWith(
        task_status, [f"http://{describe_socket(s)}" for s in sockets]
    )
    # The drain stays held open (token.closes_itself) until this returns: the
    # lifespan task group still has to be left.
    try:
        with ExitStack() as closing:
            async with anyio.create_task_group() as lifespan_tasks:
                if not await _start_lifespan(token, worker, lifespan_tasks):
                    return  # stopped while starting: never served
                try:
                    await serve_sockets(
                        token,
                        sockets,
                        worker.handle,
                        on_drain=worker.terminate,
                        after_connections=functools.partial(
                            _stop_lifespan, token, worker
                        ),
                        hold=closing,
                        abort_on_cancel=True,
                        task_status=started,
                    )
                finally:
                    # Cut short (the deadline, an error): the app still gets its
                    # lifespan shutdown, within its share of the cleanup budget.
                    await _stop_lifespan_at_last(token, worker)
    finally:
        worker.heap.thaw()
        for sock in sockets:
            sock.close()


async def _start_lifespan(
    token: ShutdownToken, worker: Worker, tasks: anyio.abc.TaskGroup
) -> bool:
    """Run the app's lifespan startup; False if the shutdown stopped it first.

    A server still starting when the shutdown begins will never be ready: its
    startup is cancelled at once, not waited for (and is reported in flight).
    """
    with token.in_flight(_STARTUP_LABEL), token.cancel_on(Phase.STOPPING):
        try:
            await worker.start_lifespan(tasks)
        except BaseException:
            worker.end_lifespan()  # the app's startup is cancelled with it
            raise
        return True
    return False  # only when cancel_on stopped the startup


async def _stop_lifespan(token: ShutdownToken, worker: Worker) -> None:
    with token.in_flight(_SHUTDOWN_LABEL):
        await worker.stop_lifespan()


async def _stop_lifespan_at_last(token: ShutdownToken, worker: Worker) -> None:
    """Run (or finish) the lifespan shutdown after the server was cut short.

    Shielded, and bounded by half of the cleanup window (``cancel_timeout``,
    or what is left of the budget): the services started before this one
    keep the other half for their own cleanup. A lifespan shutdown still
    running then is cancelled, with a warning.
    """
    window = token.shield_cleanup()
    now = anyio.current_time()
    window.deadline = now + (window.deadline - now) * _LIFESPAN_SHARE
    with window:
        await _stop_lifespan(token, worker)
    if window.cancelled_caught:
        _logger.warning(
            "shutdown_scope: the app's lifespan shutdown did not end %.3g s"
            " after the server was cut short; cancelling it",
            window.deadline - now,
        )
    worker.end_lifespan()
