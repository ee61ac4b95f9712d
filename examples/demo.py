"""Load a real server, SIGTERM it mid-load, and count the requests that were lost.

``python examples/demo.py [--backend trio] [--clients 32] [--duration 1]`` starts
``examples/line_server.py`` as a child process, runs many client connections
against it on 127.0.0.1 (each sends requests of 20-100 ms of server work, one
after another), sends the server SIGTERM after ``--duration`` seconds, keeps
driving until every connection is closed and new ones are refused, and then
relays the server's ShutdownReport and prints::

    <N> requests, <L> lost, exited in <X> ms

N counts the requests sent in full; a request is lost when its bytes were sent
but no full reply came back. A connection the server closes before the client
sent anything new loses nothing: the client takes that, like ``bye``, as "the
server is going away". X is the time from SIGTERM to the server's exit.
The exit code is 1 if anything was lost or the server did not exit with 0.
"""

from __future__ import annotations

import argparse
import itertools
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread
from anyio.streams.buffered import BufferedByteReceiveStream

if TYPE_CHECKING:
    from anyio.abc import SocketStream

SERVER = Path(__file__).with_name("line_server.py")
# Generous: the whole demo normally ends well within a second of the SIGTERM.
TIMEOUT = 30.0


@dataclass
class Tally:
    """What the clients saw, summed over all of them."""

    sent: int = 0  # requests whose bytes were sent in full
    answered: int = 0
    answered_after_sigterm: int = 0
    lost: int = 0
    connections: int = 0
    goodbyes: int = 0  # connections the server ended between requests
    refused: int = 0
    sigterm_at: float | None = None  # time.perf_counter()


async def _read_reply(reader: BufferedByteReceiveStream) -> bytes:
    """The reply to the request just sent, skipping an unasked ``bye``."""
    while True:
        line = await reader.receive_until(b"\n", 64)
        if line != b"bye":  # it crossed our request: the reply still comes
            return line


async def _requests(stream: SocketStream, index: int, tally: Tally) -> None:
    """Send requests on one connection until the server says goodbye."""
    reader = BufferedByteReceiveStream(stream)
    try:
        greeting = await reader.receive_until(b"\n", 64)
    except (anyio.IncompleteRead, anyio.BrokenResourceError):
        greeting = b""  # closed before accepting us: nothing sent, nothing lost
    if greeting != b"hello":
        tally.goodbyes += 1
        return
    for i in itertools.count():
        work_ms = 20 + (index * 37 + i * 53) % 81  # 20-100 ms, varied, reproducible
        try:
            await stream.send(f"work {work_ms}\n".encode())
        except anyio.BrokenResourceError:
            tally.goodbyes += 1  # not sent in full: closed between requests
            return
        tally.sent += 1
        try:
            reply = await _read_reply(reader)
        except (anyio.IncompleteRead, anyio.BrokenResourceError):
            tally.lost += 1
            return
        if not reply.startswith(b"done "):
            tally.lost += 1
            return
        tally.answered += 1
        if tally.sigterm_at is not None:
            tally.answered_after_sigterm += 1
        if reply.endswith(b" bye"):
            tally.goodbyes += 1
            return


async def _client(port: int, index: int, tally: Tally) -> None:
    """Keep one connection busy; reconnect after a goodbye, until refused."""
    while True:
        try:
            stream = await anyio.connect_tcp("127.0.0.1", port)
        except OSError:  # ConnectionRefusedError: the listener is closed
            tally.refused += 1
            return
        tally.connections += 1
        async with stream:
            await _requests(stream, index, tally)


def _wait_exit(server: subprocess.Popen[str]) -> tuple[int, float]:
    code = server.wait()
    return code, time.perf_counter()


async def drive(server: subprocess.Popen[str], clients: int, duration: float) -> int:
    """Load the server, SIGTERM it, and print what happened. Returns the exit code."""
    output = server.stdout
    if output is None:
        msg = "start the server with stdout=subprocess.PIPE"
        raise ValueError(msg)
    tally = Tally()
    with anyio.fail_after(duration + TIMEOUT):
        ready = await anyio.to_thread.run_sync(output.readline, abandon_on_cancel=True)
        if not ready.strip().isdigit():
            print(f"demo: the server did not start (it printed {ready!r})")
            return 1
        port = int(ready)
        async with anyio.create_task_group() as tg:
            for index in range(clients):
                tg.start_soon(_client, port, index, tally)
            await anyio.sleep(duration)
            tally.sigterm_at = sigterm_at = time.perf_counter()
            server.send_signal(signal.SIGTERM)
            code, exited_at = await anyio.to_thread.run_sync(
                _wait_exit, server, abandon_on_cancel=True
            )
    print(f"server exit code {code}; its report:")
    print(output.read().rstrip())
    print(
        f"{clients} clients; {tally.connections} connections, {tally.goodbyes}"
        f" ended by the server between requests, {tally.refused} refused after"
        f" SIGTERM; {tally.answered_after_sigterm} requests answered after SIGTERM"
    )
    exit_ms = (exited_at - sigterm_at) * 1000
    print(f"{tally.sent} requests, {tally.lost} lost, exited in {exit_ms:.0f} ms")
    return 1 if tally.lost or code != 0 or not tally.answered else 0


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
    argv = [sys.executable, str(SERVER), "--port", "0", "--backend", args.backend]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as server:
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
