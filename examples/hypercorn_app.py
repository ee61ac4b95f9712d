"""An ASGI app served by hypercorn under a graceful scope: SIGTERM loses nothing.

Run ``python examples/hypercorn_app.py --bind 127.0.0.1:0 [--backend trio]``. It
prints ``listening http://HOST:PORT`` when ready and, once stopped, its
``ShutdownReport`` (as JSON with ``--json``). Routes, in plain ASGI:

* ``/work?ms=N``: works N milliseconds (at most 60 s) and answers ``done N``
  (``examples/work_app.py``, which this extends);
* ``/events``: a server-sent event stream, a tick every 100 ms; when the drain
  begins it sends a final ``bye`` event and ends (the early notice: it does not
  wait to be cut at the deadline);
* ``/ws``: a websocket echo; at the drain it gets a close frame 1001;
* ``/readyz``: 200 while ready, 503 once the shutdown has begun.

Under ``shutdown-scope run --listen ADDR`` or systemd socket activation it serves
the sockets it is handed (``shutdown_scope.systemd.listen_fds()``) and ignores
``--bind``; the scope tells the launcher or systemd when it is ready (READY=1).

The lifespan prints ``lifespan: startup`` and, at shutdown, how many ``/work``
requests the app read and answered: a client-side count of answers must match.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging

import anyio
import work_app
from hypercorn.config import Config
from work_app import Receive, Scope, Send

import shutdown_scope
import shutdown_scope.systemd
from shutdown_scope import Phase, ShutdownReport, graceful_scope
from shutdown_scope.asgi import token_from_scope
from shutdown_scope.hypercorn import serve

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


async def main(binds: list[str], options: argparse.Namespace) -> ShutdownReport:
    """Serve until a signal stops the scope; print the URLs, then the report."""
    config = Config()
    config.bind = binds
    config.accesslog = None
    config.keep_alive_timeout = options.keep_alive
    config.backlog = options.backlog
    async with graceful_scope(
        announce_delay=options.announce_delay,
        drain_timeout=options.drain_timeout,
        cancel_timeout=options.cancel_timeout,
    ) as scope:
        app = App(verbose=options.verbose)
        serving = functools.partial(serve, readiness_path="/readyz")
        urls = await scope.start(serving, app, config, name="http")
        for url in urls:
            print(f"listening {url}", flush=True)
    report = scope.report
    print(json.dumps(report.as_dict()) if options.json else report, flush=True)
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--bind",
        action="append",
        help="host:port, unix:/path or fd://N (repeatable); default 127.0.0.1:8000",
    )
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("--announce-delay", type=float, default=0.0)
    parser.add_argument("--drain-timeout", type=float, default=10.0)
    parser.add_argument("--cancel-timeout", type=float, default=2.0)
    parser.add_argument(
        "--keep-alive", type=float, default=5.0, help="idle keep-alive seconds"
    )
    parser.add_argument("--backlog", type=int, default=100, help="listen backlog")
    parser.add_argument("--json", action="store_true", help="the report as JSON")
    parser.add_argument("--verbose", action="store_true", help="print every /work read")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("hypercorn").setLevel(logging.WARNING)
    inherited = [f"fd://{fd}" for fd in shutdown_scope.systemd.listen_fds()]
    binds = inherited or args.bind or ["127.0.0.1:8000"]
    # fast_exit: the report is printed and flushed; skip the interpreter teardown.
    shutdown_scope.run(main, binds, args, backend=args.backend, fast_exit=True)
