r"""The control socket: ``shutdown-scope reload --control PATH`` asks, and hears back.

A unix stream socket. The client sends ``reload\\n``; the launcher answers one
line when that reload has ended, ``ok reload N: ...`` or ``error reload N: ...``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import selectors
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from ._sockets import remove_stale_unix_socket

__all__ = ["ControlServer", "Reply", "ask_reload"]

logger = logging.getLogger("shutdown_scope.launcher")


class Reply(Protocol):
    """Tells one caller how its reload ended."""

    def __call__(self, *, ok: bool, text: str) -> None: ...


_REQUEST_LIMIT = 64
# Connections waiting at once; more are turned away (each holds an fd).
_CLIENT_LIMIT = 64


class ControlServer:
    """Listens on ``path``; each ``reload`` request goes to the supervisor."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._server = socket.socket(
            socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC
        )
        try:
            remove_stale_unix_socket(path)
            self._server.bind(path)
            self._server.listen(16)
        except OSError as error:
            self._server.close()
            msg = f"cannot listen on --control {path}: {error.strerror or error}"
            raise OSError(error.errno, msg) from None
        self._inode = Path(path).stat().st_ino
        self._server.setblocking(False)  # noqa: FBT003 -- the stdlib signature
        self._selector: selectors.BaseSelector | None = None
        self._request: Callable[[Reply | None], None] | None = None
        self._clients: dict[socket.socket, bytes] = {}

    def attach(
        self, selector: selectors.BaseSelector, request: Callable[[Reply | None], None]
    ) -> None:
        self._selector = selector
        self._request = request
        selector.register(self._server, selectors.EVENT_READ, self._accept)

    def _accept(self) -> None:
        assert self._selector is not None
        try:
            client, _ = self._server.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:  # EMFILE and the like: the launcher goes on
            logger.warning("control socket: cannot accept: %s", error)
            return
        if len(self._clients) >= _CLIENT_LIMIT:
            with contextlib.suppress(OSError):
                client.send(b"error too many control connections\n")
            client.close()
            return
        client.setblocking(False)  # noqa: FBT003 -- the stdlib signature
        self._clients[client] = b""
        self._selector.register(
            client, selectors.EVENT_READ, lambda: self._read(client)
        )

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
        buffered = self._clients[client] + data
        if b"\n" not in buffered:
            if len(buffered) >= _REQUEST_LIMIT:
                self._reply(client, ok=False, text="request too long")
            else:
                self._clients[client] = buffered
            return
        line = buffered.split(b"\n", 1)[0].strip()
        if line != b"reload":
            self._reply(
                client, ok=False, text=f"unknown request {line[:20]!r}; try reload"
            )
            return
        assert self._request is not None
        # Read no more (a client may half-close, or send more): the answer comes
        # when the reload ends.
        self._selector_unregister(client)
        self._request(functools.partial(self._reply, client))

    def _reply(self, client: socket.socket, *, ok: bool, text: str) -> None:
        if client not in self._clients:
            return
        line = f"{'ok' if ok else 'error'} {text}\n".encode()
        with contextlib.suppress(OSError):
            client.send(line)
        self._drop(client)

    def _selector_unregister(self, client: socket.socket) -> None:
        if self._selector is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(client)

    def _drop(self, client: socket.socket) -> None:
        self._clients.pop(client, None)
        self._selector_unregister(client)
        client.close()

    def close(self) -> None:
        for client in list(self._clients):
            self._drop(client)
        self._server.close()
        with contextlib.suppress(OSError):
            if Path(self.path).stat().st_ino == self._inode:  # still ours
                Path(self.path).unlink()


def ask_reload(path: str, *, timeout: float) -> tuple[bool, str]:
    """Ask the launcher at ``path`` to reload; wait for its answer.

    Raises:
        OSError: no launcher listens at ``path``, or it did not answer in time.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except OSError as error:
            msg = f"no launcher at --control {path}: {error.strerror or error}"
            raise OSError(error.errno, msg) from None
        sock.sendall(b"reload\n")
        answer = b""
        try:
            while b"\n" not in answer:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
        except TimeoutError:
            msg = f"the launcher at {path} did not answer within {timeout:g} s"
            raise OSError(msg) from None
    text = answer.decode("utf-8", "replace").strip()
    if not text:
        return False, "the launcher closed the connection without an answer"
    status, _, rest = text.partition(" ")
    return status == "ok", rest
