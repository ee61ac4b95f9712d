"""The launcher's non-blocking stderr on each kind of fd, in-process.

A socket, a terminal, a pipe whose reader is gone:
real fds, written through ``NonBlockingStderr`` as the launcher does.
"""

from __future__ import annotations

import io
import logging
import os
import select
import signal
import socket

import pytest

from shutdown_scope._launcher._log_output import (
    BUFFER_LIMIT,
    NonBlockingStderr,
    StderrHandler,
)


def notice(count: int) -> bytes:
    return f"dropped {count}\n".encode()


def test_a_socket_stderr_that_fills_up_keeps_lines_then_counts_drops() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        stream = NonBlockingStderr(ours.fileno(), notice=notice)
        line = b"x" * 1023 + b"\n"
        while stream.waiting() is None:  # written at once until the socket is full
            stream.write(line)
        assert stream.waiting() != ours.fileno()  # a description of its own
        for _ in range(BUFFER_LIMIT // len(line) + 3):
            stream.write(line)
        assert stream.dropped > 0
        dropped = stream.dropped
        theirs.setblocking(False)
        received = b""
        while stream.waiting() is not None or select.select([theirs], [], [], 0)[0]:
            # The reader drains; each time there is room, more is written.
            if select.select([theirs], [], [], 0)[0]:
                received += theirs.recv(1 << 16)
            stream.flush()
        assert received.endswith(notice(dropped))
        assert set(received[: -len(notice(dropped))]) == set(line)
        stream.close()
        assert stream.waiting() is None
        stream.write(line)  # closed: nothing written, nothing counted
        assert stream.dropped == 0
        theirs.setblocking(True)
        theirs.settimeout(0.01)
        with pytest.raises(TimeoutError):
            theirs.recv(1)


def test_a_terminal_gets_lines_with_sigttou_blocked_only_during_the_write() -> None:
    primary, terminal = os.openpty()
    try:
        before = signal.pthread_sigmask(signal.SIG_BLOCK, set())
        stream = NonBlockingStderr(terminal, notice=notice)
        stream.write(b"to the terminal\n")
        assert signal.pthread_sigmask(signal.SIG_BLOCK, set()) == before
        assert b"to the terminal" in os.read(primary, 100)
        stream.close()
    finally:
        os.close(primary)
        os.close(terminal)


def test_a_pipe_whose_reader_is_gone_is_written_to_nowhere_without_error() -> None:
    """Each write fails (EPIPE) and counts as taken: nothing waits, nothing drops."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        stream = NonBlockingStderr(write_end, notice=notice)
        for _ in range(3 * BUFFER_LIMIT // 100):
            stream.write(b"y" * 99 + b"\n")
        assert stream.waiting() is None  # taken (EPIPE): nothing waits
        assert stream.dropped == 0
        stream.close()
    finally:
        os.close(write_end)


def test_a_record_that_cannot_be_formatted_is_logged_as_unprintable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bad ``%`` argument must not stop the launcher: its message is shown."""
    text = io.StringIO()  # no fileno: written as it is
    monkeypatch.setattr("sys.stderr", text)
    handler = StderrHandler()
    try:
        record = logging.LogRecord(
            "x", logging.WARNING, __file__, 1, "%d", ("a",), None
        )
        handler.emit(record)
    finally:
        handler.close()
    assert text.getvalue() == "shutdown-scope: unprintable log record '%d'\n"
