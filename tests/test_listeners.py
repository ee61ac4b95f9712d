"""The accept loop's handling of accept() errors (shutdown_scope._listeners).

A network error on one pending connection comes at moments a test cannot
arrange, so a stand-in listener raises those; the connections it hands out are
real sockets. Running out of descriptors is arranged for real (RLIMIT_NOFILE).
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from _services import NO_SIGNALS
from typing_extensions import Self

from shutdown_scope import _listeners, graceful_scope


class Listener:
    """accept() hands out ``conns`` in order, raising the OSErrors among them."""

    def __init__(self, *conns: socket.socket | OSError) -> None:
        self.conns = list(conns)
        self.closed = False

    def accept(self) -> tuple[socket.socket, object]:
        if not self.conns:
            raise BlockingIOError
        conn = self.conns.pop(0)
        if isinstance(conn, OSError):
            raise conn
        return conn, ("127.0.0.1", 1)

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    c, d = socket.socketpair()
    yield a, c
    for s in (a, b, c, d):
        s.close()


def test_connections_accepted_before_an_error_are_spawned(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    spawned: list[socket.socket] = []
    out_of_fds = OSError(errno.EMFILE, "Too many open files")
    listener = Listener(*pair, out_of_fds)
    error = _listeners._accept_ready(listener, spawned.append)  # type: ignore[arg-type]
    assert error is out_of_fds
    assert spawned == list(pair)
    assert all(not conn.getblocking() for conn in spawned)


def test_one_clients_network_error_is_skipped(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    spawned: list[socket.socket] = []
    first, second = pair
    listener = Listener(
        OSError(errno.EPROTO, "Protocol error"),
        first,
        ConnectionAbortedError(errno.ECONNABORTED, "aborted"),
        second,
    )
    assert _listeners._accept_ready(listener, spawned.append) is None  # type: ignore[arg-type]
    assert spawned == [first, second]


def test_the_queue_is_taken_before_the_listener_closes(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    spawned: list[socket.socket] = []
    listener = Listener(pair[0], OSError(errno.EMFILE, "Too many open files"))
    _listeners._take_queue_and_close([listener], spawned.append)  # type: ignore[list-item]
    assert spawned == [pair[0]]
    assert listener.closed


# -- out of descriptors, for real --------------------------------------------------


class Descriptors:
    """Uses up this process's file descriptors: RLIMIT_NOFILE is lowered to just
    above the highest one open and every free number below it is taken, so the
    next ``accept()`` fails with EMFILE. ``free()`` gives them back."""

    def __init__(self) -> None:
        self._limits = resource.getrlimit(resource.RLIMIT_NOFILE)
        self._held: list[int] = []

    def __enter__(self) -> Self:
        highest = max(int(fd.name) for fd in Path("/proc/self/fd").iterdir())
        resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 8, self._limits[1]))
        try:
            while True:
                self._held.append(os.open(os.devnull, os.O_RDONLY))
        except OSError as error:
            if error.errno != errno.EMFILE:
                self.__exit__()
                raise
        return self

    def free(self) -> None:
        while self._held:
            os.close(self._held.pop())

    def __exit__(self, *exc_info: object) -> None:
        self.free()
        resource.setrlimit(resource.RLIMIT_NOFILE, self._limits)


class EmfileRetries(logging.Handler):
    """Counts the accept loop's warnings that carry an EMFILE error (its only
    trace of a retry); ``seen`` is set at the first."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.seen = anyio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        if any(isinstance(arg, OSError) and arg.errno == errno.EMFILE for arg in args):
            self.count += 1
            self.seen.set()


async def echo_once(conn: socket.socket) -> None:
    with conn:
        await anyio.wait_readable(conn)
        conn.sendall(b"pong " + conn.recv(64))


@pytest.fixture
def emfile_retries() -> Iterator[EmfileRetries]:
    handler = EmfileRetries()
    logger = logging.getLogger("shutdown_scope")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
# Real time on trio too (not the MockClock): the retry pause is real.
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
@pytest.mark.anyio
async def test_out_of_descriptors_the_pending_connection_waits_then_is_served(
    emfile_retries: EmfileRetries,
) -> None:
    """accept() fails with EMFILE: the listener stays, retries every pause (no
    spinning), and serves the waiting connection once descriptors are free."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    address = listener.getsockname()
    client = socket.socket()  # its descriptor is taken before they run out
    with client:
        async with graceful_scope(**NO_SIGNALS) as scope:
            await scope.start(_listeners.serve_sockets, [listener], echo_once)
            with Descriptors() as descriptors:
                client.connect(address)  # completed by the kernel's backlog
                client.sendall(b"ping")
                started = time.monotonic()
                with anyio.fail_after(10):
                    await emfile_retries.seen.wait()
                await anyio.sleep(0.3)  # a few retries' worth
                client.setblocking(False)
                with pytest.raises(BlockingIOError):
                    client.recv(64)  # not served, and not reset either
                descriptors.free()
                freed = time.monotonic()
                with anyio.fail_after(10):
                    await anyio.wait_readable(client)
                assert client.recv(64) == b"pong ping"
            # One retry per pause at most, whatever the machine's load did.
            pause = _listeners._RESOURCE_PAUSE
            retries = emfile_retries.count
            assert 1 <= retries <= (freed - started) / pause + 2, retries
            scope.request_shutdown()
    report = scope.report
    assert report.clean, report
    assert [s.outcome for s in report.services] == ["returned"]


def test_abort_connection_resets_a_tcp_connection() -> None:
    """What serve() does at the drain deadline to a connection stuck writing:
    the write fails at once, and the close that follows sends RST."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    with client, server:
        server.setblocking(False)
        with pytest.raises(BlockingIOError):
            while True:
                server.send(b"x" * 65536)
        _listeners.abort_connection(server)
        with pytest.raises(BrokenPipeError):
            server.send(b"x")
        server.close()
        _listeners.abort_connection(server)  # closed already: nothing to do
        with pytest.raises(ConnectionResetError):
            while client.recv(1 << 20):
                pass
