"""A line echo server that says goodbye on SIGTERM instead of dropping its clients.

Run ``python examples/tcp_echo.py [--port N] [--backend trio]`` and talk to it
with ``nc 127.0.0.1 N``. It prints ``ready pid=<pid> port=<port>`` once it
accepts connections and, once stopped, logs its ``ShutdownReport``; the exit
code is 0 after a clean stop.

The protocol::

    client: <line>      the server echoes the line back
    server: bye         the drain has begun: the client sends nothing more and
                        closes; a line the client sent before it read this is
                        still echoed

On SIGTERM (or Ctrl-C) the listener closes at the start of the drain (new
connections are refused), a line that has begun to arrive is read to its end
and echoed, and then every connection gets ``bye`` and is closed, idle ones at
once: an idle client does not hold the drain.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os

import anyio
from anyio.abc import SocketStream
from anyio.streams.buffered import BufferedByteReceiveStream

import shutdown_scope
from shutdown_scope import Phase, ShutdownReport, ShutdownToken, graceful_scope
from shutdown_scope.tcp import serve_tcp

MAX_LINE = 4096
# How long a client told "bye" has to close its end; a well-behaved one takes
# one round trip. It bounds how long a silent client can hold the drain open.
LINGER = 1.0


async def echo(stream: SocketStream, token: ShutdownToken) -> None:
    """Echo lines until the drain; then finish the line in hand and say bye."""
    reader = BufferedByteReceiveStream(stream)
    try:
        while True:
            with token.cancel_on(Phase.DRAINING) as waiting:
                line = await reader.receive_until(b"\n", MAX_LINE)
            if waiting.cancelled_caught:
                break
            await stream.send(line + b"\n")
        if reader.buffer:  # the drain began in the middle of a line: finish it
            await stream.send(await reader.receive_until(b"\n", MAX_LINE) + b"\n")
        await stream.send(b"bye\n")
        # Closing with unread data would reset the connection (the client could
        # lose our replies), and a line may have crossed our "bye": echo until
        # the client closes, for a while.
        with anyio.move_on_after(LINGER):
            while True:
                await stream.send(await reader.receive_until(b"\n", MAX_LINE) + b"\n")
    except (anyio.IncompleteRead, anyio.BrokenResourceError):
        pass  # the client closed its end
    except anyio.DelimiterNotFound:
        await stream.send(b"line too long: bye\n")


async def main(port: int, drain_timeout: float) -> ShutdownReport:
    """Serve until a signal stops the server; print the ready line.

    The scope logs its report (the ``logging`` setup below shows it).
    """
    async with graceful_scope(drain_timeout=drain_timeout, cancel_timeout=1) as scope:
        # scope.start() passes positional arguments only (trio style): options
        # go in a partial.
        server = functools.partial(serve_tcp, host="127.0.0.1", port=port)
        addresses = await scope.start(server, echo, name="echo")
        bound = addresses[0].rpartition(":")[2]
        print(f"ready pid={os.getpid()} port={bound}", flush=True)
    return scope.report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    add = parser.add_argument
    add("--port", type=int, default=0, help="default: 0, a free port")
    add("--backend", choices=["asyncio", "trio"], default="asyncio")
    add("--drain-timeout", type=float, default=10.0, metavar="S", help="default: 10")
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(relativeCreated)6.0f ms %(message)s"
    )
    shutdown_scope.run(main, args.port, args.drain_timeout, backend=args.backend)
