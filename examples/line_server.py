"""A TCP line server that stops on SIGTERM without losing a request.

Run ``python examples/line_server.py --port 0 [--backend trio]``: it prints its port
when ready and, once stopped, its ``ShutdownReport``. ``examples/demo.py`` drives it.

The protocol, one request at a time per connection::

    server: hello              the connection is accepted: requests are welcome
    client: work <ms>          the server works <ms> milliseconds (at most 10 s)
    server: done <n>           ... and answers; <n> counts this connection's requests
    server: done <n> bye       the same while the server drains: the client sends
                               nothing more and closes
    server: bye                unasked, to a connection waiting for a request when the
                               drain begins; a request the client sent before it read
                               this is still answered (``done <n> bye``)

On SIGTERM the listener closes at the start of the drain (new connections are
refused), requests in flight finish, and idle connections get ``bye``.
"""

from __future__ import annotations

import argparse
import functools
from typing import TYPE_CHECKING

import anyio
from anyio.abc import SocketAttribute
from anyio.streams.buffered import BufferedByteReceiveStream

import shutdown_scope
from shutdown_scope import Phase, ShutdownReport, ShutdownToken, graceful_scope

if TYPE_CHECKING:
    from anyio.abc import SocketStream, TaskStatus

MAX_LINE = 64
MAX_WORK_MS = 10_000
# How long a client told "bye" has to close its end; a well-behaved one takes one
# round trip. It bounds how long a silent connection can hold the drain open.
LINGER = 1.0


async def line_server(
    token: ShutdownToken,
    port: int,
    *,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the line protocol on 127.0.0.1 until the drain has ended every connection.

    Args:
        token: this service's shutdown token.
        port: the port to listen on; 0 picks a free one.
        task_status: gets the bound port once the server accepts connections.
    """
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=port)
    # The listener closes first; the task group then waits for every connection.
    async with anyio.create_task_group() as connections, listener:
        bound = listener.extra(SocketAttribute.local_port)  # noqa: S610 -- not Django
        task_status.started(bound)
        # STOPPING (the announce delay) still accepts; DRAINING closes the listener.
        with token.cancel_on(Phase.DRAINING):
            await listener.serve(functools.partial(_connection, token), connections)


async def _connection(token: ShutdownToken, stream: SocketStream) -> None:
    # The drain ends the moment nothing is in flight, and then the service is
    # cancelled. A connection closed at that moment may hold a request the client
    # has already sent but we have not read yet (golang/go#23829); the client would
    # see a reset. So the whole connection is in flight until its goodbye is done,
    # which takes one round trip (at most LINGER).
    with token.in_flight("connection"):
        async with stream:
            try:
                await _converse(token, stream, BufferedByteReceiveStream(stream))
            except (anyio.IncompleteRead, anyio.BrokenResourceError):
                pass  # the client went away between requests
            except anyio.DelimiterNotFound:
                pass  # not our protocol: drop the connection


async def _converse(
    token: ShutdownToken, stream: SocketStream, reader: BufferedByteReceiveStream
) -> None:
    served = 0
    await stream.send(b"hello\n")
    while True:
        with token.cancel_on(Phase.DRAINING) as idle:
            line = await reader.receive_until(b"\n", MAX_LINE)
        if idle.cancelled_caught:
            break
        served += 1
        if await _answer(token, stream, line, served):
            return
    await stream.send(b"bye\n")
    with anyio.move_on_after(LINGER):
        # The client may have sent one more request before it read "bye".
        line = await reader.receive_until(b"\n", MAX_LINE)
        await _answer(token, stream, line, served + 1)


async def _answer(
    token: ShutdownToken, stream: SocketStream, line: bytes, n: int
) -> bool:
    """Do one request and reply. Returns True if the reply said goodbye."""
    with token.in_flight("request"):
        verb, _, arg = line.partition(b" ")
        if verb != b"work" or not arg.isdigit() or int(arg) > MAX_WORK_MS:
            await stream.send(b"error bye\n")
            return True
        await anyio.sleep(int(arg) / 1000)
        bye = token.phase >= Phase.DRAINING
        await stream.send(f"done {n}{' bye' if bye else ''}\n".encode())
        return bye


async def main(port: int) -> ShutdownReport:
    """Run the server until a signal (or Ctrl-C) stops it; print port and report."""
    async with graceful_scope(drain_timeout=5, cancel_timeout=1) as scope:
        bound = await scope.start(line_server, port, name="line_server")
        print(bound, flush=True)
    print(scope.report, flush=True)
    return scope.report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    args = parser.parse_args()
    shutdown_scope.run(main, args.port, backend=args.backend)
