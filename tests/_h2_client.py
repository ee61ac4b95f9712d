"""A raw HTTP/2 client for tests: h2 over a blocking socket, each frame's fate kept.

h2 (the client side too) treats every frame after a GOAWAY as a protocol error,
even the rest of the responses a server still owes (RFC 9113, 6.8). So GOAWAY
frames are taken out of the byte stream before h2 sees it and recorded here; h2
handles everything else (settings, PING acknowledgements, flow control).
"""

from __future__ import annotations

import dataclasses
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import h2.config
import h2.connection
import h2.events
import h2.settings
from hyperframe.frame import GoAwayFrame

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["H2Client", "Stream"]

_FRAME_HEADER = 9
_GOAWAY = 0x7
TIMEOUT = 20.0


@dataclasses.dataclass
class Stream:
    """What became of one stream."""

    status: int | None = None
    body: bytes = b""
    ended: bool = False  # END_STREAM received
    reset: int | None = None  # RST_STREAM's error code


class H2Client:
    """One HTTP/2 connection: prior knowledge, or an ``Upgrade: h2c`` request.

    Args:
        url: ``http://host:port``.
        upgrade: a path to request with ``Upgrade: h2c`` (becomes stream 1);
            None for prior knowledge.
        window: the initial flow-control window of each stream: 0 holds every
            response's DATA until ``open_window``.
    """

    def __init__(
        self, url: str, *, upgrade: str | None = None, window: int = 65535
    ) -> None:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=TIMEOUT)
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.h2 = h2.connection.H2Connection(config)
        self.h2.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window,
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
            },
        )
        self.streams: dict[int, Stream] = {}
        # In order of arrival: ("goaway", last_stream_id), ("headers", id),
        # ("data", id), ("end", id), ("reset", id), ("eof", 0).
        self.log: list[tuple[str, int]] = []
        self.eof = False
        self.settings_acked = False  # the server has read our preface
        self.received = b""  # every HTTP/2 byte the server sent, GOAWAYs too
        self._frames = b""
        self._held: list[bytes] | None = None  # see hold_answers
        if upgrade is None:
            self.h2.initiate_connection()
            self.sock.sendall(self.h2.data_to_send())
        else:
            self._upgrade(host, upgrade)

    def _upgrade(self, host: str, path: str) -> None:
        settings = self.h2.initiate_upgrade_connection()
        assert settings is not None
        self.sock.sendall(
            b"GET %s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            b"Upgrade: h2c\r\nHTTP2-Settings: %s\r\n\r\n"
            % (path.encode(), host.encode(), settings)
        )
        head = b""
        while b"\r\n\r\n" not in head:
            data = self.sock.recv(65536)
            assert data, f"closed during the upgrade: {head!r}"
            head += data
        head, rest = head.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101 "), head
        self.streams[1] = Stream()
        self.sock.sendall(self.h2.data_to_send())  # the preface
        self._feed(rest)

    @property
    def goaways(self) -> list[int]:
        """The last stream ids of the GOAWAY frames received, in order."""
        return [value for kind, value in self.log if kind == "goaway"]

    def request(self, path: str, *, method: str = "GET", end: bool = True) -> int:
        """Open a stream with a request for ``path``; its id.

        ``end=False`` leaves the request body open (``send_data`` goes on). A
        CONNECT (a tunnel) takes ``host:port`` for ``path`` and stays open.
        """
        stream_id = self.h2.get_next_available_stream_id()
        if method == "CONNECT":
            headers = [(b":method", b"CONNECT"), (b":authority", path.encode())]
            end = False
        else:
            headers = [
                (b":method", method.encode()),
                (b":path", path.encode()),
                (b":scheme", b"http"),
                (b":authority", b"x"),
            ]
        self.h2.send_headers(stream_id, headers, end_stream=end)
        self.streams[stream_id] = Stream()
        self.sock.sendall(self.h2.data_to_send())
        return stream_id

    def send_data(self, stream_id: int, data: bytes, *, end: bool = False) -> None:
        """Request body on an open stream."""
        self.h2.send_data(stream_id, data, end_stream=end)
        self.sock.sendall(self.h2.data_to_send())

    def hold_answers(self) -> None:
        """Keep h2's own answers (PING and SETTINGS acknowledgements) until
        ``release``: as a client that has not read the frames yet."""
        self._held = []

    def release(self) -> None:
        """Send the answers held since ``hold_answers``."""
        held, self._held = self._held or [], None
        self.sock.sendall(b"".join(held) + self.h2.data_to_send())

    def open_window(self, stream_id: int) -> None:
        """Let the server send ``stream_id`` its whole response."""
        self.h2.increment_flow_control_window(2**20, stream_id=stream_id)
        self.sock.sendall(self.h2.data_to_send())

    def send_raw(self, data: bytes) -> None:
        """Bytes of our own making (a frame h2 would not send)."""
        self.sock.sendall(data)

    def read_until(self, done: Callable[[], bool], *, timeout: float = TIMEOUT) -> None:
        """Read and handle frames until ``done()`` or the server's end of data."""
        deadline = time.monotonic() + timeout
        while not done() and not self.eof:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                msg = f"timed out; received so far: {self.log}"
                raise AssertionError(msg) from None
            if not data:
                self.eof = True
                self.log.append(("eof", 0))
            else:
                self._feed(data)

    def read_to_the_end(self) -> None:
        """Read until the server closes the connection."""
        self.read_until(lambda: False)

    def _feed(self, data: bytes) -> None:
        self.received += data
        self._frames += data
        while len(self._frames) >= _FRAME_HEADER:
            length = int.from_bytes(self._frames[:3], "big")
            end = _FRAME_HEADER + length
            if len(self._frames) < end:
                return
            frame, self._frames = self._frames[:end], self._frames[end:]
            if frame[3] == _GOAWAY:
                goaway, _ = GoAwayFrame.parse_frame_header(memoryview(frame[:9]))
                assert isinstance(goaway, GoAwayFrame)
                goaway.parse_body(memoryview(frame[9:]))
                assert goaway.error_code == 0, goaway
                self.log.append(("goaway", goaway.last_stream_id))
                continue
            for event in self.h2.receive_data(frame):
                self._record(event)
            if self._held is None:
                self.sock.sendall(self.h2.data_to_send())
            else:
                self._held.append(self.h2.data_to_send())

    def _record(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.SettingsAcknowledged):
            self.settings_acked = True
        stream_id = getattr(event, "stream_id", None)
        if stream_id is None or stream_id not in self.streams:
            return
        stream = self.streams[stream_id]
        if isinstance(event, h2.events.ResponseReceived):
            assert event.headers is not None
            stream.status = int(dict(event.headers)[b":status"])
            self.log.append(("headers", stream_id))
        elif isinstance(event, h2.events.DataReceived):
            assert event.data is not None
            stream.body += event.data
            self.log.append(("data", stream_id))
            if event.flow_controlled_length:
                self.h2.acknowledge_received_data(
                    event.flow_controlled_length, stream_id
                )
        elif isinstance(event, h2.events.StreamEnded):
            stream.ended = True
            self.log.append(("end", stream_id))
        elif isinstance(event, h2.events.StreamReset):
            stream.reset = event.error_code
            self.log.append(("reset", stream_id))

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
