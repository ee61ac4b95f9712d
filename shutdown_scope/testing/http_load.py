"""Keep-alive HTTP/1.1 load with an exact account of every request's fate.

``await run_load("http://127.0.0.1:8000/work?ms=5", clients=32, seconds=2)``
runs real clients (anyio sockets and h11) and returns what happened to their
requests; ``rehearse()`` drives a server with it, and so do this project's demo,
tests and benchmarks (``examples/http_load.py`` is its command line). Each
request ends in one of:

* **answered**: a complete response;
* **refused**: the connection could not be opened (the listener is closed);
  counted per attempt: a refused client retries every 5 ms;
* **closed idle**: a reused keep-alive connection was closed before any byte of
  the answer came back. The server closed it between requests, so it never read
  this one; HTTP/1.1 lets a client retry such a request (RFC 9112, 9.3.1), and
  the server-side count of requests read tells the two cases apart;
* **lost**: anything else: the connection broke after the request was sent on a
  new connection, or in the middle of an answer.

Needs h11: ``pip install "shutdown-scope[testing]"``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import anyio
from anyio.abc import SocketStream

from shutdown_scope._extras import missing_extra

try:
    import h11
except ModuleNotFoundError as _missing:
    raise missing_extra(_missing, "testing") from _missing

__all__ = ["LoadStats", "get_status", "run_load", "split_url"]

_READ = 65536


@dataclasses.dataclass
class LoadStats:
    """What happened to the requests of every client."""

    answered: int = 0
    refused: int = 0
    closed_idle: int = 0
    lost: int = 0
    statuses: dict[int, int] = dataclasses.field(default_factory=dict)
    connections: int = 0
    closed_by_server: int = 0  # after a response that said Connection: close
    last_answer: float = 0.0  # time.monotonic() of the last complete answer
    latencies: list[float] = dataclasses.field(default_factory=list)
    resets: int = 0  # of ``lost``: those the server reset (ECONNRESET)
    # (time.monotonic() at completion, status, latency) of every answer, in order.
    answer_log: list[tuple[float, int, float]] = dataclasses.field(default_factory=list)

    def summary(self) -> str:
        """One line for people."""
        return (
            f"{self.answered} answered, {self.lost} lost, {self.refused} refused, "
            f"{self.closed_idle} closed idle; {self.connections} connections, "
            f"{self.closed_by_server} closed by the server with Connection: close"
        )


class _BrokenError(Exception):
    """The connection ended; did any byte of the answer come, was it a reset?"""

    def __init__(self, *, answered_bytes: bool, reset: bool = False) -> None:
        super().__init__()
        self.answered_bytes = answered_bytes
        self.reset = reset


def _is_reset(error: BaseException) -> bool:
    # anyio raises BrokenResourceError from the OSError on asyncio.
    return isinstance(error, ConnectionResetError) or isinstance(
        error.__cause__, ConnectionResetError
    )


async def _receive(stream: SocketStream) -> tuple[bytes, bool]:
    """The next bytes (b"" at the end), and whether the end was a reset."""
    try:
        return await stream.receive(_READ), False
    except anyio.EndOfStream:
        return b"", False
    except (anyio.BrokenResourceError, OSError) as error:
        return b"", _is_reset(error)


async def _exchange(
    stream: SocketStream, conn: h11.Connection, host: str, target: str
) -> tuple[int, bytes]:
    request = h11.Request(method="GET", target=target, headers=[("Host", host)])
    data = conn.send(request) + (conn.send(h11.EndOfMessage()) or b"")
    try:
        await stream.send(data)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as error:
        raise _BrokenError(answered_bytes=False, reset=_is_reset(error)) from None
    got_bytes = reset = False
    status, body = 0, b""
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError:
            raise _BrokenError(answered_bytes=got_bytes, reset=reset) from None
        if event is h11.NEED_DATA:
            chunk, reset = await _receive(stream)
            got_bytes = got_bytes or bool(chunk)
            conn.receive_data(chunk)
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body += bytes(event.data)
        elif isinstance(event, h11.EndOfMessage):
            return status, body
        elif isinstance(event, h11.ConnectionClosed):
            raise _BrokenError(answered_bytes=got_bytes, reset=reset)


async def _client(
    host: str, port: int, target: str, stats: LoadStats, going: Callable[[], bool]
) -> None:
    while going():
        try:
            stream = await anyio.connect_tcp(host, port)
        except OSError:
            stats.refused += 1
            await anyio.sleep(0.005)
            continue
        stats.connections += 1
        async with stream:
            conn = h11.Connection(h11.CLIENT)
            reused = False
            while going():
                started = time.monotonic()
                try:
                    status, _ = await _exchange(stream, conn, host, target)
                except _BrokenError as broken:
                    if reused and not broken.answered_bytes:
                        stats.closed_idle += 1
                    else:
                        stats.lost += 1
                        stats.resets += broken.reset
                    break
                stats.last_answer = now = time.monotonic()
                stats.latencies.append(now - started)
                stats.answer_log.append((now, status, now - started))
                stats.answered += 1
                stats.statuses[status] = stats.statuses.get(status, 0) + 1
                if (
                    conn.their_state is h11.MUST_CLOSE
                    or conn.our_state is h11.MUST_CLOSE
                ):
                    stats.closed_by_server += 1
                    break
                conn.start_next_cycle()
                reused = True


async def run_load(
    url: str,
    *,
    clients: int,
    seconds: float = math.inf,
    stats: LoadStats | None = None,
    while_: Callable[[], bool] = lambda: True,
) -> LoadStats:
    """Run ``clients`` keep-alive clients against ``url``.

    Each client reuses its connection until the server says ``Connection:
    close`` or closes it, then opens a new one; a refused connection is retried
    every 5 ms. They stop after ``seconds``, or once ``while_()`` is false
    (checked before each connection and request). Pass ``stats`` to read the
    numbers while it runs.

    Raises:
        ValueError: ``url`` is not ``http://host:port/...``, or ``clients`` < 1.
    """
    host, port, target = split_url(url)
    if isinstance(clients, bool) or not isinstance(clients, int) or clients < 1:
        msg = f"clients must be an int >= 1, not {clients!r}"
        raise ValueError(msg)
    stats = LoadStats() if stats is None else stats
    until = time.monotonic() + seconds

    def going() -> bool:
        return time.monotonic() < until and while_()

    async with anyio.create_task_group() as tg:
        for _ in range(clients):
            tg.start_soon(_client, host, port, target, stats, going)
    return stats


async def get_status(url: str) -> int:
    """One GET of ``url`` on a new connection; the status of its answer.

    Raises:
        ValueError: ``url`` is not ``http://host:port/...``.
        OSError: no complete answer (refused, reset, closed early).
    """
    host, port, target = split_url(url)
    async with await anyio.connect_tcp(host, port) as stream:
        try:
            status, _ = await _exchange(
                stream, h11.Connection(h11.CLIENT), host, target
            )
        except _BrokenError:
            msg = f"{url}: the connection ended before a complete answer"
            raise ConnectionError(msg) from None
    return status


def split_url(url: str) -> tuple[str, int, str]:
    """Host, port and request target of an ``http://host:port/path?query`` URL.

    Raises:
        ValueError: it is not such a URL.
    """
    msg = f"need an http://host:port/path URL, not {url!r}"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # a port that is not a number, or out of range
        raise ValueError(msg) from None
    if parts.scheme != "http" or not parts.hostname or port is None:
        raise ValueError(msg)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return parts.hostname, port, target
