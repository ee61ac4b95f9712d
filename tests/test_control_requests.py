"""The control socket's protocol, in-process: one server, a selector, real clients."""

from __future__ import annotations

import argparse
import selectors
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shutdown_scope._launcher._control import ControlServer, Reply, ask_reload
from shutdown_scope._launcher._values import group as parse_group


def test_a_group_is_a_name_or_a_gid() -> None:
    assert parse_group("0") == 0
    assert parse_group("root") == 0
    with pytest.raises(argparse.ArgumentTypeError, match="is not a group name or gid"):
        parse_group("no-such-group-here")
    with pytest.raises(argparse.ArgumentTypeError):
        parse_group("٣")  # a digit, but not ASCII: no gid


class Served:
    """A ControlServer whose selector loop runs in a thread until closed."""

    def __init__(self, path: Path, dump: Callable[[], tuple[bool, str]] | None) -> None:
        self.server = ControlServer(str(path))
        self.selector = selectors.DefaultSelector()
        self.requests: list[Reply | None] = []
        self.server.attach(self.selector, self.requests.append, dump)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            for key, _ in self.selector.select(0.02):
                key.data()
            if self.requests:  # answer a reload at once, as a finished one
                reply = self.requests.pop()
                assert reply is not None
                reply(ok=True, text="reload 1: done")

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.server.close()
        self.selector.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    it = Served(tmp_path / "control", lambda: (True, "dump: SIGUSR1 sent to pid 7"))
    yield it
    it.close()


def ask_raw(path: str, data: bytes) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(path)
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    return answer.decode()


def test_reload_and_dump_are_answered(served: Served) -> None:
    assert ask_reload(served.server.path, timeout=10) == (True, "reload 1: done")
    assert ask_reload(served.server.path, timeout=10, request="dump") == (
        True,
        "dump: SIGUSR1 sent to pid 7",
    )


@pytest.mark.parametrize(
    ("sent", "answer"),
    [
        (b"restart\n", "error unknown request b'restart'; try reload\n"),
        (b"x" * 64, "error request too long\n"),  # no newline in the limit
        (b"reload", ""),  # half a line, then the client closed: dropped, no reload
    ],
)
def test_bad_requests_get_one_line_and_no_reload(
    served: Served, sent: bytes, answer: str
) -> None:
    assert ask_raw(served.server.path, sent) == answer
    assert ask_reload(served.server.path, timeout=10) == (True, "reload 1: done")


def test_without_a_dump_handler_dump_is_an_unknown_request(tmp_path: Path) -> None:
    served = Served(tmp_path / "control", None)
    try:
        ok, text = ask_reload(served.server.path, timeout=10, request="dump")
    finally:
        served.close()
    assert (ok, text) == (False, "unknown request b'dump'; try reload")
