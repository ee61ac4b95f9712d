"""The control socket's failure paths, in-process: real sockets, no launcher.

The server's side is driven by a selector in the test's thread; a client that
needs a peer answering (or not) while it waits gets a thread.
"""

from __future__ import annotations

import errno
import os
import select
import selectors
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shutdown_scope._launcher._control import ControlServer, Reply, ask_reload

CLIENT_LIMIT = 64  # _control._CLIENT_LIMIT


class Held:
    """A ControlServer whose reload requests are held (a reload in progress)."""

    def __init__(self, path: Path, *, group: int | None = None) -> None:
        self.server = ControlServer(str(path), group=group)
        self.selector = selectors.DefaultSelector()
        self.requests: list[Reply | None] = []
        self.server.attach(self.selector, self.requests.append)

    def pump(self, until: Callable[[], bool]) -> None:
        """Serve events until ``until()`` (within 10 s)."""
        deadline = time.monotonic() + 10
        while not until():
            assert time.monotonic() < deadline, "the server did not get there"
            for key, _ in self.selector.select(0.05):
                key.data()

    def close(self) -> None:
        self.server.close()
        self.selector.close()


@pytest.fixture
def held(tmp_path: Path) -> Iterator[Held]:
    it = Held(tmp_path / "control")
    yield it
    it.close()


def connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(path)
    return sock


def test_with_every_client_waiting_on_a_reload_one_more_is_refused(
    held: Held,
) -> None:
    """None idle to make room: the newcomer hears why; the others keep waiting."""
    clients = []
    for n in range(1, CLIENT_LIMIT + 1):
        clients.append(connect(held.server.path))
        clients[-1].sendall(b"reload\n")
        held.pump(lambda n=n: len(held.requests) == n)  # type: ignore[misc]
    extra = connect(held.server.path)
    with extra:
        held.pump(lambda: bool(select.select([extra], [], [], 0)[0]))
        assert extra.recv(100) == b"error too many control connections\n"
    # The launcher stops with the reloads unanswered: each client sees the end.
    held.server.close()
    for sock in clients:
        with sock:
            assert sock.recv(100) == b""
    # A reload that ends after that answers nobody (and does not fail).
    reply = held.requests[0]
    assert reply is not None
    reply(ok=True, text="reload 1: done")


def test_a_reload_answered_after_its_client_left_is_dropped(held: Held) -> None:
    with connect(held.server.path) as client:
        client.sendall(b"reload\n")
        held.pump(lambda: bool(held.requests))
    reply = held.requests[0]
    assert reply is not None
    reply(ok=True, text="reload 1: done")  # the send fails quietly (EPIPE)
    reply(ok=True, text="reload 1: done")  # answered already: nothing more


def acl(user_obj: int) -> bytes:
    """A default POSIX ACL (the xattr's form): the owner gets ``user_obj``."""
    undefined = 0xFFFFFFFF
    entries = ((0x01, user_obj), (0x04, 0), (0x20, 0))  # USER_OBJ, GROUP_OBJ, OTHER
    return struct.pack("<I", 2) + b"".join(
        struct.pack("<HHI", tag, perm, undefined) for tag, perm in entries
    )


@pytest.mark.parametrize(
    ("group", "mode"), [(None, 0o600), (os.getgid(), 0o660)], ids=["user", "group"]
)
def test_a_default_acl_narrower_than_the_mode_is_overridden(
    tmp_path: Path, group: int | None, mode: int
) -> None:
    """An owner's r-- default ACL would leave the socket unusable by its owner."""
    try:
        os.setxattr(tmp_path, "system.posix_acl_default", acl(0o4))
    except OSError as error:
        pytest.skip(f"no POSIX ACLs on {tmp_path}: {error.strerror}")
    server = Held(tmp_path / "control", group=group)
    try:
        assert stat.S_IMODE((tmp_path / "control").lstat().st_mode) == mode
    finally:
        server.close()


# -- the client: `shutdown-scope reload --control` ---------------------------------


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[socket.socket]:
    """A bare listening socket: a launcher that accepts or answers as told."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(tmp_path / "control"))
        sock.listen(0)
        yield sock


def peer(listener: socket.socket, *, read: bool) -> threading.Thread:
    """Accept one connection, wait for its request, close (after reading it)."""

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            select.select([conn], [], [], 10)
            if read:
                conn.recv(100)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("read", [True, False], ids=["read", "unread"])
def test_a_launcher_that_closes_without_an_answer(
    listener: socket.socket, *, read: bool
) -> None:
    """Closed with the request read (EOF) or not (a reset): no answer, no hang."""
    thread = peer(listener, read=read)
    answer = ask_reload(listener.getsockname(), timeout=10)
    thread.join()
    assert answer == (False, "the launcher closed the connection without an answer")


def test_a_launcher_that_never_answers_is_a_timeout(listener: socket.socket) -> None:
    with pytest.raises(OSError, match=r"did not answer within 0\.1 s"):
        ask_reload(listener.getsockname(), timeout=0.1)


def test_a_launcher_whose_backlog_stays_full_is_a_timeout(
    listener: socket.socket,
) -> None:
    fillers = []
    try:
        while True:  # connections nobody accepts, until the backlog is full
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setblocking(False)
            fillers.append(sock)
            sock.connect(listener.getsockname())
    except BlockingIOError:
        pass
    try:
        with pytest.raises(OSError, match="accepted no connection in time") as e:
            ask_reload(listener.getsockname(), timeout=0.15)
        assert e.value.errno == errno.EAGAIN
    finally:
        for sock in fillers:
            sock.close()
