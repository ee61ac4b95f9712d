"""An ASGI app served by hypercorn under a graceful scope: SIGTERM loses nothing.

Run ``python examples/hypercorn_app.py --bind 127.0.0.1:0 [--backend trio]``. It
prints ``listening http://HOST:PORT`` when ready and, once stopped, its
``ShutdownReport`` (as JSON with ``--json``). Routes, in plain ASGI:

* ``/work?ms=N``: works N milliseconds (at most 60 s) and answers ``done N``
  (``examples/work_app.py``, which this extends);
* ``/events`` and ``/ws``: a server-sent event stream and a websocket echo that end
  at the drain (``examples/streaming_app.py``, shared with the uvicorn example);
* ``/readyz``: 200 while ready, 503 once the shutdown has begun.

With ``--plain`` it serves ``examples/work_app.py``'s app alone (``/work`` and
``/readyz``): the benches compare it with a bare hypercorn of that app.

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

import work_app
from hypercorn.config import Config
from streaming_app import App

import shutdown_scope
import shutdown_scope.systemd
from shutdown_scope import ShutdownReport, graceful_scope
from shutdown_scope.hypercorn import serve


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
        # --plain: the bench's like-for-like with a bare server of work_app.py.
        app = (work_app.App if options.plain else App)(verbose=options.verbose)
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
    parser.add_argument(
        "--plain", action="store_true", help="serve examples/work_app.py's app alone"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("hypercorn").setLevel(logging.WARNING)
    inherited = [f"fd://{fd}" for fd in shutdown_scope.systemd.listen_fds()]
    binds = inherited or args.bind or ["127.0.0.1:8000"]
    # fast_exit: the report is printed and flushed; skip the interpreter teardown.
    shutdown_scope.run(main, binds, args, backend=args.backend, fast_exit=True)
