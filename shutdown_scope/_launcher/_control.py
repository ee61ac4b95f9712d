r"""The control socket: ``shutdown-scope reload --control PATH`` asks, and hears back.

A unix stream socket. The client sends ``reload\\n``; the launcher answers one
line when that reload has ended, ``ok reload N: ...`` or ``error reload N: ...``.
Or ``dump\\n``: the serving generation's processes get SIGUSR1 (a
``graceful_scope(dump_signal=SIGUSR1)`` writes its dump to its stderr), and the
answer names them at once.

It is a way to drive the launcher, so: mode 0600 whatever the umask (0660 with
a group), and each peer's credentials (SO_PEERCRED) are checked: the launcher's
uid, root, or a member of ``--control-group``. A client has a short while to
send its request, and the oldest such client makes room when too many wait; when
the process runs out of file descriptors, the socket is left alone for a moment
instead of being polled in a loop.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import math
import os
import selectors
import socket
import stat
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ._sockets import remove_stale_unix_socket

__all__ = ["ControlServer", "Reply", "ask_reload"]

logger = logging.getLogger("shutdown_scope.launcher")


class Reply(Protocol):
    """Tells one caller how its reload ended."""

    def __call__(self, *, ok: bool, text: str) -> None: ...


_REQUEST_LIMIT = 64
# Connections served at once (each holds an fd); the oldest idle one makes room.
_CLIENT_LIMIT = 64
# A client must send its whole request within this; `reload` does at once.
IDLE_TIMEOUT = 2.0
# Out of file descriptors: the listening socket is not polled for this long.
_ACCEPT_PAUSE = 0.5
_BACKLOG = 16
# How often `reload --control` tries again while the backlog is full.
_CONNECT_RETRY = 0.05
_UCRED = struct.Struct("iII")  # struct ucred: pid, uid, gid
# asm-generic's value (Linux >= 4.13); Python does not name it.
_SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)
_GID_SIZE = 4


@dataclass
class _Client:
    sock: socket.socket
    deadline: float  # for its request; inf once it has asked
    buffered: bytes = b""


def _bind_private(sock: socket.socket, path: str, group: int | None) -> None:
    """Bind ``path`` with mode 0600 (0660 and ``group``), whatever the umask.

    The umask is process-wide, but the launcher is single-threaded: nothing
    else creates a file meanwhile, and the socket is never wider than its mode.
    """
    mode = 0o600 if group is None else 0o660
    previous = os.umask(0o777 & ~mode)
    try:
        sock.bind(path)
    finally:
        os.umask(previous)
    if group is not None:
        os.chown(path, -1, group, follow_symlinks=False)
    if stat.S_IMODE(os.lstat(path).st_mode) != mode:  # a default ACL beat the umask
        Path(path).chmod(mode)


def _peer_groups(sock: socket.socket) -> list[int]:
    """The peer's supplementary groups when it connected (empty if unknown)."""
    for count in (256, 65536):  # NGROUPS_MAX is 65536
        try:
            data = sock.getsockopt(socket.SOL_SOCKET, _SO_PEERGROUPS, count * _GID_SIZE)
        except OSError as error:
            if error.errno == errno.ERANGE:
                continue
            return []
        return list(struct.unpack(f"{len(data) // _GID_SIZE}I", data))
    return []


class ControlServer:
    """Listens on ``path``; each ``reload`` request goes to the supervisor."""

    def __init__(self, path: str, *, group: int | None = None) -> None:
        self.path = path
        self._group = group
        self._server = socket.socket(
            socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC
        )
        try:
            remove_stale_unix_socket(path)
            _bind_private(self._server, path, group)
            self._server.listen(_BACKLOG)
        except OSError as error:
            self._server.close()
            msg = f"cannot listen on --control {path}: {error.strerror or error}"
            raise OSError(error.errno, msg) from None
        bound = os.lstat(path)
        self._identity = (bound.st_dev, bound.st_ino)
        self._server.setblocking(False)  # noqa: FBT003 -- the stdlib signature
        self._selector: selectors.BaseSelector | None = None
        self._request: Callable[[Reply | None], None] | None = None
        self._dump: Callable[[], tuple[bool, str]] | None = None
        self._clients: dict[socket.socket, _Client] = {}
        self._paused_until: float | None = None  # out of fds: not polled till then
        self._pauses = 0  # in this episode of accept errors
        self._refused = 0

    def attach(
        self,
        selector: selectors.BaseSelector,
        request: Callable[[Reply | None], None],
        dump: Callable[[], tuple[bool, str]] | None = None,
    ) -> None:
        """Serve requests: ``reload`` goes to ``request`` (answered when it
        ends), ``dump`` to ``dump`` (answered at once)."""
        self._selector = selector
        self._request = request
        self._dump = dump
        selector.register(self._server, selectors.EVENT_READ, self._accept)

    # -- deadlines, driven by the supervisor's loop ------------------------------

    def next_deadline(self) -> float:
        """When ``check_deadlines`` has something to do (inf: nothing)."""
        deadlines = [c.deadline for c in self._clients.values()]
        if self._paused_until is not None:
            deadlines.append(self._paused_until)
        return min(deadlines, default=math.inf)

    def check_deadlines(self, now: float) -> None:
        """Drop clients that sent no request in time; poll the socket again."""
        for client in [c for c in self._clients.values() if now >= c.deadline]:
            self._reply(
                client.sock,
                ok=False,
                text=f"no request within {IDLE_TIMEOUT:g} s",
            )
        if self._paused_until is not None and now >= self._paused_until:
            self._paused_until = None
            if self._selector is not None:
                self._selector.register(
                    self._server, selectors.EVENT_READ, self._accept
                )

    # -- connections ---------------------------------------------------------------

    def _accept(self) -> None:
        try:
            client, _ = self._server.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        except OSError as error:  # EMFILE, ENFILE, ENOBUFS: it lasts a while
            self._pause(error)
            return
        if self._pauses:
            logger.info("control socket: accepting again")
            self._pauses = 0
        client.setblocking(False)  # noqa: FBT003 -- the stdlib signature
        refusal = self._refusal(client)
        if refusal is not None:
            self._refuse(client, refusal)
            return
        if len(self._clients) >= _CLIENT_LIMIT and not self._drop_oldest_idle():
            self._refuse(client, "too many control connections")
            return
        self._clients[client] = _Client(client, time.monotonic() + IDLE_TIMEOUT)
        assert self._selector is not None
        self._selector.register(
            client, selectors.EVENT_READ, lambda: self._read(client)
        )

    def _pause(self, error: OSError) -> None:
        assert self._selector is not None
        self._selector_unregister(self._server)
        self._paused_until = time.monotonic() + _ACCEPT_PAUSE
        if not self._pauses:  # once per episode, not once per try
            logger.warning(
                "control socket: cannot accept: %s; trying again every %g s",
                error.strerror or error,
                _ACCEPT_PAUSE,
            )
        self._pauses += 1

    def _refusal(self, client: socket.socket) -> str | None:
        """Why this peer may not drive the launcher; None if it may."""
        try:
            data = client.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
        except OSError:
            return "cannot tell who connected"
        pid, uid, gid = _UCRED.unpack(data)
        if uid in {0, os.geteuid()}:
            return None
        if self._group is not None and (
            gid == self._group or self._group in _peer_groups(client)
        ):
            return None
        if not self._refused:  # logged once; a flood of them is only counted
            allowed = f"uid {os.geteuid()}, root" + (
                f" or group {self._group}" if self._group is not None else ""
            )
            logger.warning(
                "control socket: refused uid %d (pid %d): only %s may reload",
                uid,
                pid,
                allowed,
            )
        self._refused += 1
        return f"uid {uid} may not use this control socket"

    def _refuse(self, client: socket.socket, why: str) -> None:
        with contextlib.suppress(OSError):
            client.send(f"error {why}\n".encode())
        client.close()

    def _drop_oldest_idle(self) -> bool:
        idle = [c for c in self._clients.values() if not math.isinf(c.deadline)]
        if not idle:
            return False
        oldest = min(idle, key=lambda c: c.deadline)
        self._reply(oldest.sock, ok=False, text="too many control connections")
        return True

    def _read(self, client: socket.socket) -> None:
        try:
            data = client.recv(_REQUEST_LIMIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(client)  # gone before asking
            return
        state = self._clients[client]
        buffered = state.buffered + data
        if b"\n" not in buffered:
            if len(buffered) >= _REQUEST_LIMIT:
                self._reply(client, ok=False, text="request too long")
            else:
                state.buffered = buffered
            return
        line = buffered.split(b"\n", 1)[0].strip()
        if line == b"dump" and self._dump is not None:
            ok, text = self._dump()
            self._reply(client, ok=ok, text=text)
            return
        if line != b"reload":
            self._reply(
                client, ok=False, text=f"unknown request {line[:20]!r}; try reload"
            )
            return
        assert self._request is not None
        # Read no more (a client may half-close, or send more): the answer comes
        # when the reload ends.
        state.deadline = math.inf
        self._selector_unregister(client)
        self._request(functools.partial(self._reply, client))

    def _reply(self, client: socket.socket, *, ok: bool, text: str) -> None:
        if client not in self._clients:
            return
        line = f"{'ok' if ok else 'error'} {text}\n".encode()
        with contextlib.suppress(OSError):
            client.send(line)
        self._drop(client)

    def _selector_unregister(self, sock: socket.socket) -> None:
        if self._selector is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(sock)

    def _drop(self, client: socket.socket) -> None:
        self._clients.pop(client, None)
        self._selector_unregister(client)
        client.close()

    def close(self) -> None:
        for client in list(self._clients):
            self._drop(client)
        self._selector_unregister(self._server)
        self._server.close()
        if self._refused > 1:
            logger.warning(
                "control socket: %d connections refused in all", self._refused
            )
        with contextlib.suppress(OSError):
            now = os.lstat(self.path)
            if (now.st_dev, now.st_ino) == self._identity:  # not replaced since
                Path(self.path).unlink()


def _connect(path: str, deadline: float) -> socket.socket:
    """Connect to ``path``, trying again while its backlog is full (EAGAIN)."""
    told = False
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)  # noqa: FBT003 -- a full backlog: EAGAIN, not a wait
        try:
            sock.connect(path)
        except BlockingIOError:  # the launcher is busy: its backlog is full
            sock.close()
            if time.monotonic() + _CONNECT_RETRY >= deadline:
                msg = f"the launcher at --control {path} accepted no connection in time"
                raise OSError(errno.EAGAIN, msg) from None
            if not told:
                logger.info("the launcher at --control %s is busy; waiting", path)
                told = True
            time.sleep(_CONNECT_RETRY)
            continue
        except OSError as error:
            sock.close()
            msg = f"no launcher at --control {path}: {error.strerror or error}"
            raise OSError(error.errno, msg) from None
        return sock


def ask_reload(
    path: str, *, timeout: float, request: str = "reload"
) -> tuple[bool, str]:
    """Ask the launcher at ``path`` to reload (or ``request="dump"``); wait for
    its answer.

    Raises:
        OSError: no launcher listens at ``path``, or it did not answer in time.
    """
    deadline = time.monotonic() + timeout
    with _connect(path, deadline) as sock:
        sock.settimeout(
            None if math.isinf(timeout) else max(0.001, deadline - time.monotonic())
        )
        answer = b""
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(
                f"{request}\n".encode()
            )  # if refused, its answer is still read
        try:
            while b"\n" not in answer:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
        except TimeoutError:
            msg = f"the launcher at {path} did not answer within {timeout:g} s"
            raise OSError(msg) from None
        except OSError:
            pass  # it closed the connection: what it said first is read below
    text = answer.decode("utf-8", "replace").strip()
    if not text:
        return False, "the launcher closed the connection without an answer"
    status, _, rest = text.partition(" ")
    return status == "ok", rest
