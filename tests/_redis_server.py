"""A redis-server of a test's own, and a relay that can hold back its replies.

``redis-server`` is Debian's redis-server package; ``REDIS_SERVER`` is None
where it is missing (the tests that need it skip).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import anyio
from _spawn import TIMEOUT

sys.path.insert(0, str(Path(__file__).parent.parent / "examples"))
from _resp import Reply, open_redis

__all__ = [
    "GROUP",
    "REDIS_SERVER",
    "STREAM",
    "Redis",
    "Relay",
    "redis_server",
    "wait_until",
]

REDIS_SERVER = shutil.which("redis-server")
# The example consumer's defaults.
STREAM, GROUP = "orders", "order-workers"


@dataclass(frozen=True, slots=True)
class Redis:
    """A redis-server of a test's own, and a blocking way to talk to it."""

    address: str
    socket_path: str

    def call(self, *args: str | int) -> Reply:
        async def one_command() -> Reply:
            async with open_redis(self.address) as redis:
                return await redis.command(*args)

        return anyio.run(one_command)

    def add_orders(self, count: int) -> list[str]:
        ids = [self.call("XADD", STREAM, "*", "order", n) for n in range(count)]
        return [i.decode() for i in ids if isinstance(i, bytes)]

    def pending(self) -> dict[str, tuple[str, int]]:
        """The group's pending entries: ID -> (consumer, times delivered)."""
        reply = self.call("XPENDING", STREAM, GROUP, "-", "+", 1000)
        assert isinstance(reply, list)
        found = {}
        for item in reply:
            match item:
                case [bytes(entry_id), bytes(consumer), int(), int(deliveries)]:
                    found[entry_id.decode()] = (consumer.decode(), deliveries)
                case _:
                    raise AssertionError(reply)
        return found

    def last_delivered_id(self) -> str:
        reply = self.call("XINFO", "GROUPS", STREAM)
        match reply:
            case [list(group)]:
                info = dict(zip(group[::2], group[1::2], strict=True))
                last = info[b"last-delivered-id"]
                if isinstance(last, bytes):
                    return last.decode()
        raise AssertionError(reply)

    def stream_ids(self) -> list[str]:
        reply = self.call("XRANGE", STREAM, "-", "+")
        assert isinstance(reply, list)
        ids = [entry[0] for entry in reply if isinstance(entry, list)]
        return [i.decode() for i in ids if isinstance(i, bytes)]

    def xack_calls(self) -> int:
        stats = self.call("INFO", "commandstats")
        assert isinstance(stats, bytes)
        for line in stats.decode().splitlines():
            if line.startswith("cmdstat_xack:"):
                return int(line.split("calls=")[1].split(",")[0])
        return 0

    def consumer_is_blocked(self) -> bool:
        """Some client waits in a blocking XREADGROUP (flag ``b``)."""
        clients = self.call("CLIENT", "LIST")
        assert isinstance(clients, bytes)
        return any(
            "cmd=xreadgroup" in line and "flags=b" in line
            for line in clients.decode().splitlines()
        )


def wait_until(check: Callable[[], bool], what: str) -> None:
    """Poll ``check`` until it is true; fail after ``_spawn.TIMEOUT``."""
    deadline = time.monotonic() + TIMEOUT
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.01)


@contextmanager
def redis_server() -> Iterator[Redis]:
    """A new redis-server on a Unix socket, without persistence; stopped on exit."""
    assert REDIS_SERVER is not None
    # Short: a Unix socket's path has a limit of 107 bytes, pytest's tmp_path not.
    directory = tempfile.mkdtemp(prefix="redis-")
    path = f"{directory}/redis.sock"
    argv = [REDIS_SERVER, "--port", "0", "--unixsocket", path]
    argv += ["--unixsocketperm", "700", "--dir", directory]
    argv += ["--save", "", "--appendonly", "no"]
    server = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    try:
        started = Redis(address=f"unix://{path}", socket_path=path)

        def answers() -> bool:
            assert server.poll() is None, "redis-server exited at start"
            with suppress(OSError):
                return started.call("PING") == b"PONG"
            return False

        wait_until(answers, "redis-server answers PING")
        yield started
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(directory)


class Relay:
    """A TCP relay to Redis that can hold back the server's replies.

    It stands for the network between the consumer and Redis: with replies
    held, Redis has sent an XREADGROUP reply (and moved its entries to the
    pending list) that the consumer has not received yet.
    """

    def __init__(self, socket_path: str) -> None:
        self._socket_path = socket_path
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"redis://127.0.0.1:{self._listener.getsockname()[1]}"
        self._forwarding = threading.Event()
        self._forwarding.set()
        self._sockets: list[socket.socket] = [self._listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def hold_replies(self) -> None:
        self._forwarding.clear()

    def close(self) -> None:
        self._forwarding.set()
        for sock in self._sockets:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self) -> None:
        with suppress(OSError):
            while True:
                client, _ = self._listener.accept()
                server = socket.socket(socket.AF_UNIX)
                server.connect(self._socket_path)
                self._sockets += [client, server]
                self._pump(client, server, None)
                self._pump(server, client, self._forwarding)

    @staticmethod
    def _pump(
        src: socket.socket, dst: socket.socket, gate: threading.Event | None
    ) -> None:
        def forward() -> None:
            with suppress(OSError):
                while data := src.recv(65536):
                    if gate is not None:
                        gate.wait()
                    dst.sendall(data)
            with suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

        threading.Thread(target=forward, daemon=True).start()
