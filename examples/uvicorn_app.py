"""An ASGI app served by uvicorn under a graceful scope: SIGTERM loses nothing.

Run ``python examples/uvicorn_app.py --port 0 [--http h11|httptools]``. It
prints ``listening http://HOST:PORT`` when ready and, once stopped, its
``ShutdownReport`` (as JSON with ``--json``). Routes
(``examples/streaming_app.py``, in plain ASGI): ``/work?ms=N``, ``/events`` (a
stream that ends itself at the drain), ``/ws`` (a websocket echo, closed with
1001 at the drain) and ``/readyz`` (200 while ready, 503 once the shutdown has
begun); with ``--plain``, only ``examples/work_app.py``'s ``/work`` (and
``/readyz``): the benches compare it with a bare uvicorn of that app.

Two services, stopped in reverse order: ``pool`` (a stand-in for a database
pool, started first) and ``http``. The app's lifespan shutdown runs once the
HTTP drain is over, while the pool is still open; it prints how many ``/work``
requests the app read and answered, then the pool prints ``pool: closed``.

Under ``shutdown-scope run --listen ADDR`` or systemd socket activation it serves
the sockets it is handed (``shutdown_scope.systemd.listen_fds()``) and ignores
``--host``/``--port``; the scope tells the launcher or systemd when it is ready.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import socket

import anyio
import streaming_app
import uvicorn
import work_app
from anyio.abc import TaskStatus

import shutdown_scope
import shutdown_scope.systemd
from shutdown_scope import ShutdownReport, ShutdownToken, graceful_scope
from shutdown_scope.uvicorn import serve


async def pool(
    token: ShutdownToken,  # noqa: ARG001 -- every service gets its token
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """A dependency of the app: open before it serves, closed after its lifespan."""
    print("pool: open", flush=True)
    try:
        task_status.started()
        await anyio.sleep_forever()
    finally:
        print("pool: closed", flush=True)


async def main(
    options: argparse.Namespace, inherited: list[socket.socket]
) -> ShutdownReport:
    """Serve until a signal stops the scope; print the URLs, then the report."""
    # --plain: the bench's like-for-like with a bare server of work_app.py.
    served = work_app.App if options.plain else streaming_app.App
    app = served(verbose=options.verbose)
    config = uvicorn.Config(
        app,
        host=options.host,
        port=options.port,
        http=options.http,
        log_config=None,
        access_log=False,
        # Longer than a load balancer's idle timeout, as they recommend: only
        # the drain closes an idle keep-alive connection here.
        timeout_keep_alive=75,
    )
    async with graceful_scope(
        announce_delay=options.announce_delay,
        drain_timeout=options.drain_timeout,
        cancel_timeout=options.cancel_timeout,
    ) as scope:
        await scope.start(pool, name="pool")
        serving = functools.partial(
            serve, readiness_path="/readyz", sockets=inherited or None
        )
        urls = await scope.start(serving, app, config, name="http")
        for url in urls:
            print(f"listening {url}", flush=True)
    report = scope.report
    print(json.dumps(report.as_dict()) if options.json else report, flush=True)
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--http", choices=["auto", "h11", "httptools"], default="auto")
    parser.add_argument("--announce-delay", type=float, default=0.0)
    parser.add_argument("--drain-timeout", type=float, default=10.0)
    parser.add_argument("--cancel-timeout", type=float, default=2.0)
    parser.add_argument("--json", action="store_true", help="the report as JSON")
    parser.add_argument("--verbose", action="store_true", help="print every /work read")
    parser.add_argument(
        "--plain", action="store_true", help="serve examples/work_app.py's app alone"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("uvicorn").setLevel(logging.WARNING)
    fds = shutdown_scope.systemd.listen_fds()
    sockets = [socket.socket(fileno=fd) for fd in fds]
    # fast_exit: the report is printed and flushed; skip the interpreter teardown.
    shutdown_scope.run(main, args, sockets, fast_exit=True)
