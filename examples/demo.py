"""Load a real hypercorn server, SIGTERM it mid-load, and count what was lost.

``python examples/demo.py [--backend trio] [--clients 32] [--duration 1]`` is a
rehearsal (``shutdown_scope.testing.rehearse``): it starts
``examples/hypercorn_app.py`` (an ASGI app served by hypercorn under
``graceful_scope``) as a child process, drives it with keep-alive HTTP/1.1
clients on 127.0.0.1 (each request is 20 ms of server work), sends the server
SIGTERM after ``--duration`` seconds, keeps driving until the server has
exited, then prints the server's ShutdownReport and::

    <N> requests, <L> lost, exited in <X> ms

N counts the requests the clients sent in full on a connection the server was
reading. L counts those that got no complete answer, plus any request the app
read whose answer never reached a client (the app prints how many it read). X is
the time from SIGTERM to the server's exit. The exit code is 1 if anything was
lost or the server did not exit with 0.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from shutdown_scope.testing import Rehearsal, RehearsalError, rehearse

SERVER = Path(__file__).with_name("hypercorn_app.py")
# Generous: the whole demo normally ends well within a second of the SIGTERM.
TIMEOUT = 30.0
WORK_MS = 20


def show(rehearsal: Rehearsal, clients: int) -> int:
    """Print what happened. Returns the exit code."""
    print(f"server exit code {rehearsal.exit_code}; its report:")
    print(rehearsal.report if rehearsal.reports else "(none)")
    found = re.search(r"/work requests: (\d+) read, (\d+) answered", rehearsal.output)
    read = int(found[1]) if found else 0
    print(f"{clients} clients: {rehearsal}")
    lost = rehearsal.lost + max(0, read - rehearsal.answered)
    exit_ms = rehearsal.exited_after * 1000
    print(
        f"{rehearsal.answered + lost} requests, {lost} lost, exited in {exit_ms:.0f} ms"
    )
    return 1 if lost or rehearsal.exit_code != 0 or not rehearsal.answered else 0


def main() -> int:
    """Parse the options, rehearse the server's shutdown, and print it."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument(
        "--clients", type=int, default=32, help="concurrent connections"
    )
    parser.add_argument(
        "--duration", type=float, default=1.0, help="seconds of load before SIGTERM"
    )
    args = parser.parse_args()
    server = [sys.executable, str(SERVER), "--backend", args.backend]
    try:
        rehearsal = rehearse(
            [*server, "--bind", "127.0.0.1:{port}"],
            url=f"http://127.0.0.1:{{port}}/work?ms={WORK_MS}",
            clients=args.clients,
            signal_after=args.duration,
            start_timeout=TIMEOUT,
            grace_period=TIMEOUT,
        )
    except RehearsalError as error:
        print(f"demo: {error}", file=sys.stderr)
        return 1
    return show(rehearsal, args.clients)


if __name__ == "__main__":
    sys.exit(main())
