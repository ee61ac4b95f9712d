"""HTTP/2 (h2c) load with an exact account of every stream's fate.

``python examples/h2_load.py http://127.0.0.1:8000/work?ms=5 --connections 4
--streams 8 --seconds 2`` runs real HTTP/2 clients (anyio sockets and h2, prior
knowledge) and prints what happened to their streams. Each connection keeps
``streams`` requests in flight, opening a new one as each ends, until the server
sends GOAWAY; then it finishes the streams the GOAWAY covers, closes, and opens a
new connection. ``bench/drain.py`` uses it. Each stream ends in one of:

* **answered**: a complete response, to its END_STREAM;
* **refused**: the connection could not be opened (the listener is closed);
* **not processed**: the server said it never started it: the stream is above
  the last stream id of its GOAWAY, or was reset with REFUSED_STREAM. A client
  may retry such a request anywhere (RFC 9113, 8.7);
* **failed**: anything else: reset with another code (such as NO_ERROR), or the
  connection ended before the response did while a GOAWAY covered the stream,
  or with no GOAWAY at all.

h2 treats every frame after a GOAWAY as an error, even the responses a server
still owes; GOAWAY frames are therefore taken out of the byte stream (and
recorded) before h2 sees it.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import anyio
import h2.config
import h2.connection
import h2.events
import h2.exceptions
from anyio.abc import SocketStream
from h2.errors import ErrorCodes
from hyperframe.frame import GoAwayFrame

__all__ = ["H2Stats", "run_h2_load"]

_READ = 65536
_FRAME_HEADER = 9
_GOAWAY_TYPE = 0x7


@dataclasses.dataclass
class H2Stats:
    """What happened to the streams of every connection."""

    answered: int = 0
    refused: int = 0
    not_processed: int = 0
    failed: int = 0
    statuses: dict[int, int] = dataclasses.field(default_factory=dict)
    connections: int = 0
    goaways: int = 0  # connections that received a GOAWAY
    last_answer: float = 0.0  # time.monotonic() of the last complete answer

    def summary(self) -> str:
        """One line for people."""
        return (
            f"{self.answered} answered, {self.failed} failed, {self.not_processed}"
            f" not processed, {self.refused} refused; {self.connections}"
            f" connections, {self.goaways} with a GOAWAY"
        )


class _Connection:
    """One HTTP/2 connection and the fate of its streams."""

    def __init__(self, stream: SocketStream, host: str, target: str) -> None:
        self.stream = stream
        self.headers = [
            (b":method", b"GET"),
            (b":path", target.encode()),
            (b":scheme", b"http"),
            (b":authority", host.encode()),
        ]
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.h2 = h2.connection.H2Connection(config)
        self.h2.initiate_connection()
        self.open: dict[int, int] = {}  # stream id -> status (0: none yet)
        self.last_stream_id: int | None = None  # of the latest GOAWAY
        self._frames = b""

    def open_streams(self, wanted: int) -> None:
        """Open streams up to ``wanted`` in flight (and the server's limit)."""
        while self.last_stream_id is None and len(self.open) < wanted:
            stream_id = self.h2.get_next_available_stream_id()
            try:
                self.h2.send_headers(stream_id, self.headers, end_stream=True)
            except h2.exceptions.TooManyStreamsError:
                return  # the server's SETTINGS_MAX_CONCURRENT_STREAMS
            self.open[stream_id] = 0

    async def flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            await self.stream.send(data)

    def feed(self, data: bytes, stats: H2Stats) -> None:
        """Handle the bytes received: GOAWAY frames here, the rest by h2."""
        self._frames += data
        while len(self._frames) >= _FRAME_HEADER:
            end = _FRAME_HEADER + int.from_bytes(self._frames[:3], "big")
            if len(self._frames) < end:
                return
            frame, self._frames = self._frames[:end], self._frames[end:]
            if frame[3] == _GOAWAY_TYPE:
                self._goaway(frame, stats)
            else:
                for event in self.h2.receive_data(frame):
                    self._event(event, stats)

    def _goaway(self, frame: bytes, stats: H2Stats) -> None:
        goaway, _ = GoAwayFrame.parse_frame_header(memoryview(frame[:_FRAME_HEADER]))
        assert isinstance(goaway, GoAwayFrame)
        goaway.parse_body(memoryview(frame[_FRAME_HEADER:]))
        if self.last_stream_id is None:
            stats.goaways += 1
        self.last_stream_id = goaway.last_stream_id
        for stream_id in [s for s in self.open if s > goaway.last_stream_id]:
            del self.open[stream_id]
            stats.not_processed += 1

    def _event(self, event: h2.events.Event, stats: H2Stats) -> None:
        stream_id = getattr(event, "stream_id", None)
        if stream_id not in self.open:
            return
        if isinstance(event, h2.events.ResponseReceived):
            self.open[stream_id] = int(dict(event.headers or ())[b":status"])
        elif isinstance(event, h2.events.DataReceived):
            length = event.flow_controlled_length or 0
            self.h2.acknowledge_received_data(length, stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            code = self.open.pop(stream_id)
            stats.answered += 1
            stats.statuses[code] = stats.statuses.get(code, 0) + 1
            stats.last_answer = time.monotonic()
        elif isinstance(event, h2.events.StreamReset):
            del self.open[stream_id]
            if event.error_code == ErrorCodes.REFUSED_STREAM:
                stats.not_processed += 1
            else:
                stats.failed += 1

    def ended(self, stats: H2Stats) -> None:
        """The server closed the connection: what is still open is lost."""
        stats.failed += len(self.open)
        self.open.clear()


@dataclasses.dataclass(frozen=True)
class _Load:
    host: str
    port: int
    target: str
    streams: int  # in flight per connection
    going: Callable[[], bool]


async def _connection(load: _Load, stats: H2Stats) -> None:
    try:
        stream = await anyio.connect_tcp(load.host, load.port)
    except OSError:
        stats.refused += 1
        await anyio.sleep(0.005)
        return
    stats.connections += 1
    async with stream:
        conn = _Connection(stream, load.host, load.target)
        conn.open_streams(load.streams if load.going() else 0)
        try:
            await conn.flush()
            while conn.open or (conn.last_stream_id is None and load.going()):
                data = await stream.receive(_READ)
                conn.feed(data, stats)
                if load.going():
                    conn.open_streams(load.streams)
                await conn.flush()
        except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
            conn.ended(stats)
        except h2.exceptions.ProtocolError:
            conn.ended(stats)


async def _client(load: _Load, stats: H2Stats) -> None:
    while load.going():
        await _connection(load, stats)


async def run_h2_load(
    url: str,
    *,
    connections: int,
    streams: int,
    seconds: float = math.inf,
    stats: H2Stats | None = None,
    while_: Callable[[], bool] = lambda: True,
) -> H2Stats:
    """Run ``connections`` HTTP/2 clients with ``streams`` requests each in flight.

    They stop opening streams after ``seconds`` or once ``while_()`` is false,
    and finish those open. Pass ``stats`` to read the numbers while it runs.
    """
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname is None or parts.port is None:
        msg = f"need http://host:port/path, not {url!r}"
        raise ValueError(msg)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    stats = H2Stats() if stats is None else stats
    until = time.monotonic() + seconds

    def going() -> bool:
        return time.monotonic() < until and while_()

    load = _Load(parts.hostname, parts.port, target, streams, going)
    async with anyio.create_task_group() as tg:
        for _ in range(connections):
            tg.start_soon(_client, load, stats)
    return stats


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("url")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    result = anyio.run(
        lambda: run_h2_load(
            args.url,
            connections=args.connections,
            streams=args.streams,
            seconds=args.seconds,
        )
    )
    print(result.summary())
