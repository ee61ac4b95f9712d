"""The accept loop's handling of accept() errors (shutdown_scope._listeners).

The kernel reports these at moments a test cannot arrange (out of descriptors,
a network error on one pending connection), so a stand-in listener raises them;
the connections it hands out are real sockets.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator

import pytest

from shutdown_scope import _listeners


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
