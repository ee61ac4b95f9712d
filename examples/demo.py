"""Load a real hypercorn server, SIGTERM it mid-load, and count what was lost.

``python examples/demo.py [--backend trio] [--clients 32] [--duration 1]`` starts
``examples/hypercorn_app.py`` (an ASGI app served by hypercorn under
``graceful_scope``) as a child process, drives it with keep-alive HTTP/1.1
clients on 127.0.0.1 (``examples/http_load.py``; each request is 20 ms of
server work), sends the server SIGTERM after ``--duration`` seconds, keeps
driving until the server has exited, then relays the server's ShutdownReport
and prints::

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
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import anyio.to_thread
from http_load import LoadStats, run_load

SERVER = Path(__file__).with_name("hypercorn_app.py")
# Generous: the whole demo normally ends well within a second of the SIGTERM.
TIMEOUT = 30.0
WORK_MS = 20


async def drive(server: subprocess.Popen[str], clients: int, duration: float) -> int:
    """Load the server, SIGTERM it, and print what happened. Returns the exit code."""
    output = server.stdout
    if output is None:
        msg = "start the server with stdout=subprocess.PIPE"
        raise ValueError(msg)
    stats = LoadStats()
    with anyio.fail_after(duration + TIMEOUT):
        ready = ""
        while not ready.startswith("listening http://"):
            ready = await anyio.to_thread.run_sync(output.readline)
            if not ready:
                print("demo: the server exited before it listened")
                return 1
        url = ready.split()[-1]
        exited_at = 0.0

        def running() -> bool:
            return server.poll() is None

        async def wait_exit() -> None:
            nonlocal exited_at
            await anyio.to_thread.run_sync(server.wait, abandon_on_cancel=True)
            exited_at = time.perf_counter()

        async with anyio.create_task_group() as tg:
            tg.start_soon(
                lambda: run_load(
                    f"{url}/work?ms={WORK_MS}",
                    clients=clients,
                    stats=stats,
                    while_=running,
                )
            )
            await anyio.sleep(duration)
            sigterm_at = time.perf_counter()
            server.send_signal(signal.SIGTERM)
            await wait_exit()
    rest = output.read()
    print(f"server exit code {server.returncode}; its report:")
    print(rest.rstrip())
    found = re.search(r"/work requests: (\d+) read, (\d+) answered", rest)
    read = int(found[1]) if found else 0
    print(f"{clients} clients: {stats.summary()}")
    lost = stats.lost + max(0, read - stats.answered)
    exit_ms = (exited_at - sigterm_at) * 1000
    print(f"{stats.answered + lost} requests, {lost} lost, exited in {exit_ms:.0f} ms")
    return 1 if lost or server.returncode != 0 or not stats.answered else 0


def main() -> int:
    """Parse the options, start the server, and drive it."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument(
        "--clients", type=int, default=32, help="concurrent connections"
    )
    parser.add_argument(
        "--duration", type=float, default=1.0, help="seconds of load before SIGTERM"
    )
    args = parser.parse_args()
    argv = [sys.executable, str(SERVER), "--bind", "127.0.0.1:0"]
    argv += ["--backend", args.backend]
    # The server's log (stderr) is left out: its report on stdout says it all.
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    ) as server:
        try:
            return anyio.run(drive, server, args.clients, args.duration)
        except TimeoutError:
            print(f"demo: gave up after {TIMEOUT:g} s", file=sys.stderr)
            return 1
        finally:
            if server.poll() is None:  # the demo failed: do not leave it behind
                server.kill()


if __name__ == "__main__":
    sys.exit(main())
