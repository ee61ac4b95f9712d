"""A minimal Redis client (RESP2) on anyio streams: runs on asyncio and on Trio.

Just enough for ``examples/redis_consumer.py`` and its tests: one connection,
one command at a time, replies parsed into plain Python values. A command that
is interrupted between sending and reading its whole reply (cancelled, or the
connection failed) leaves the connection broken: its reply may still arrive,
and would be taken as the next command's, so every later command raises.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeAlias
from urllib.parse import urlsplit

import anyio
from anyio.abc import ByteStream
from anyio.streams.buffered import BufferedByteReceiveStream

__all__ = ["RedisConnection", "RedisError", "Reply", "open_redis", "parse_address"]

# None is RESP2's null bulk string or null array (e.g. XREADGROUP timing out).
Reply: TypeAlias = "bytes | int | list[Reply] | None"

_MAX_LINE = 64 * 1024  # a header line; bulk strings are read by their length
DEFAULT_PORT = 6379


class RedisError(Exception):
    """The server answered with an error reply (``-ERR ...``, ``-BUSYGROUP ...``)."""


class RedisConnection:
    """One connection to a Redis server; use ``open_redis`` to get one."""

    def __init__(self, stream: ByteStream) -> None:
        self._stream = stream
        self._reader = BufferedByteReceiveStream(stream)
        self._lock = anyio.Lock()
        self._broken: str | None = None

    async def command(self, *args: str | bytes | int) -> Reply:
        """Send one command and return its reply. A checkpoint.

        Raises:
            RedisError: the server answered with an error.
            RuntimeError: an earlier command on this connection was interrupted.
        """
        if self._broken is not None:
            msg = f"this Redis connection is unusable: {self._broken}; open a new one"
            raise RuntimeError(msg)
        async with self._lock:
            done = False
            try:
                await self._stream.send(_encode(args))
                reply = await self._read_reply()
                done = True
            finally:
                if not done:
                    name = str(args[0]) if args else "?"
                    self._broken = f"a {name} command was interrupted"
        if isinstance(reply, RedisError):
            raise reply
        return reply

    async def _read_reply(self) -> Reply | RedisError:  # noqa: PLR0911 -- one per type
        line = await self._reader.receive_until(b"\r\n", _MAX_LINE)
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest
        if kind == b"-":
            # Returned, not raised: an error inside an array must not leave the
            # rest of that array unread on the connection.
            return RedisError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            data = await self._reader.receive_exactly(size + 2)
            return data[:-2]
        if kind == b"*":
            count = int(rest)
            if count < 0:
                return None
            items: list[Reply] = []
            error: RedisError | None = None
            for _ in range(count):
                item = await self._read_reply()
                if isinstance(item, RedisError):
                    error = error or item
                else:
                    items.append(item)
            return items if error is None else error
        msg = f"not a RESP2 reply: {line[:80]!r}"
        raise ValueError(msg)


def _encode(args: tuple[str | bytes | int, ...]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def parse_address(address: str) -> tuple[str, int] | str:
    """``redis://HOST[:PORT]`` as (host, port), or ``unix:///PATH`` as the path.

    Raises:
        ValueError: any other form, with the two accepted ones in its message.
    """
    forms = "redis://HOST[:PORT] or unix:///PATH"
    parts = urlsplit(address)
    if parts.scheme == "unix" and parts.path.startswith("/") and not parts.netloc:
        return parts.path
    # No AUTH, no database number: this small client would silently ignore them.
    plain = not (parts.username or parts.password or parts.query or parts.fragment)
    if parts.scheme == "redis" and plain and parts.hostname and parts.path in {"", "/"}:
        try:
            port = parts.port
        except ValueError:
            port = -1
        if port != -1:
            return parts.hostname, DEFAULT_PORT if port is None else port
    msg = f"not a Redis address: {address!r} (expected {forms})"
    raise ValueError(msg)


@asynccontextmanager
async def open_redis(address: str) -> AsyncIterator[RedisConnection]:
    """Connect to ``address`` (see ``parse_address``); close on exit. A checkpoint.

    Raises:
        ValueError: ``address`` is not in a form ``parse_address`` accepts.
        ConnectionError: nothing answers there; the message names ``address``.
    """
    where = parse_address(address)
    stream: ByteStream
    try:
        if isinstance(where, str):
            stream = await anyio.connect_unix(where)
        else:
            stream = await anyio.connect_tcp(*where)
    except OSError as error:
        msg = f"cannot reach Redis at {address}: {error}"
        raise ConnectionError(msg) from error
    async with stream:
        yield RedisConnection(stream)
