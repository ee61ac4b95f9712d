"""The launcher's log lines on stderr, written so that they never block its loop.

A stderr pipe nobody reads fills up, and a blocking write would then stop the
loop: no reload, no reaping, no stop. So each line goes through a file
description of the launcher's own, in non-blocking mode, and what does not fit
waits in a bounded buffer; past it, lines are dropped and counted, and the count
is written once stderr takes lines again. The child inherits fd 2 itself, whose
description stays blocking: O_NONBLOCK belongs to the open file description,
which the child shares, so it is never set on fd 2. The description of our own
is a reopening of ``/proc/self/fd/2`` (pipes, FIFOs, terminals), ``send`` with
MSG_DONTWAIT for a socket, and a plain write for a regular file. When the
reopening is refused (a pipe of another uid), a write is made only after
``poll`` finds room, one PIPE_BUF at a time; a writer sharing the pipe could
still fill it in between, so that is the fallback only.

``--log-format json`` gives one JSON object per line with an ``event`` field
(``shutdown_scope.logging.JsonFormatter``, as for apps).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import selectors
import signal
import socket
import stat
import sys
from collections.abc import Callable, Iterator

TYPE_CHECKING = False  # typing costs milliseconds before the first child starts
if TYPE_CHECKING:
    from typing import TextIO

__all__ = [
    "LOG_FORMATS",
    "NonBlockingStderr",
    "StderrHandler",
    "attach",
    "room_for_log",
]

LOG_FORMATS = ("text", "json")
# Lines wait in at most this many bytes while stderr is full; later ones drop.
BUFFER_LIMIT = 32 * 1024
_CHUNK = select.PIPE_BUF  # written whole or not at all to a pipe


class NonBlockingStderr:
    """Writes bytes to fd 2 (or ``fd``) without ever blocking; see the module doc."""

    def __init__(self, fd: int = 2, *, notice: Callable[[int], bytes]) -> None:
        self._notice = notice  # the line that says how many were dropped
        self._pending = bytearray()
        self.dropped = 0
        self._fd = fd
        self._own: int | None = None
        self._sock: socket.socket | None = None
        self._mode = "closed"
        self._tty = False
        with contextlib.suppress(OSError):
            self._open(fd)

    def _open(self, fd: int) -> None:
        mode = os.fstat(fd).st_mode
        if stat.S_ISREG(mode):
            self._mode = "plain"  # a disk never waits on a reader
        elif stat.S_ISSOCK(mode):
            self._sock = socket.socket(fileno=os.dup(fd))
            self._mode = "socket"
        else:
            self._tty = os.isatty(fd)
            try:
                path = f"/proc/self/fd/{fd}"
                flags = os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
                self._own = os.open(path, flags)
                self._mode = "own"
            except OSError:
                self._mode = "poll"

    def waiting(self) -> int | None:
        """The fd to wait on for room while lines wait for it, else None."""
        if not self._pending or self._mode == "closed":
            return None
        if self._sock is not None:
            return self._sock.fileno()
        return self._fd if self._own is None else self._own

    def write(self, data: bytes) -> None:
        """Write ``data`` now, or later, or count it dropped: never wait."""
        if self._mode == "closed":
            return
        if len(self._pending) + len(data) > BUFFER_LIMIT:
            self.dropped += 1
        else:
            self._pending += data
        self.flush()

    def flush(self) -> None:
        """Write what waits, as far as stderr takes it now."""
        while self._pending and self._mode != "closed":
            written = self._write_some(bytes(self._pending[:_CHUNK]))
            if written is None:
                return
            del self._pending[:written]
            if not self._pending and self.dropped:
                self._pending += self._notice(self.dropped)
                self.dropped = 0

    def _write_some(self, data: bytes) -> int | None:
        """Bytes written (all of them when stderr is gone); None if it is full."""
        try:
            if self._sock is not None:
                return self._sock.send(data, socket.MSG_DONTWAIT)
            if self._mode == "poll":
                poller = select.poll()
                poller.register(self._fd, select.POLLOUT)
                if not poller.poll(0):
                    return None
            fd = self._fd if self._own is None else self._own
            if not self._tty:
                return os.write(fd, data)
            # A background launcher writing to a terminal with TOSTOP gets SIGTTOU,
            # which it catches (to pass on): the write would be retried forever.
            # Blocked, the signal is not sent and the write goes through.
            old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTTOU})
            try:
                return os.write(fd, data)
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, old)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:  # EPIPE and the like: nobody will ever read it
            return len(data)

    def close(self) -> None:
        """One last try to write what waits, then close our description."""
        self.flush()
        if self._own is not None:
            os.close(self._own)
            self._own = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._mode = "closed"
        self._pending.clear()  # stderr is still full: nothing more can be done


class StderrHandler(logging.Handler):
    """A logging handler over ``NonBlockingStderr``, in the text or JSON format."""

    def __init__(self, log_format: str = "text") -> None:
        super().__init__()
        if log_format == "json":
            from shutdown_scope.logging import JsonFormatter  # only when chosen

            self.setFormatter(JsonFormatter())
        else:
            self.setFormatter(logging.Formatter("shutdown-scope: %(message)s"))
        # sys.stderr replaced by an object with no fd (pytest's capsys, an
        # embedding program): written to as it is, as logging.StreamHandler does.
        self._text: TextIO | None = None
        fd = -1
        try:
            fd = sys.stderr.fileno()
        except (AttributeError, OSError, ValueError):
            self._text = sys.stderr
        self.stream = NonBlockingStderr(fd, notice=self._dropped_notice)
        _streams.append(self.stream)

    def _dropped_notice(self, count: int) -> bytes:
        text = f"{count} log lines dropped: stderr was full"
        record = logging.LogRecord(
            "shutdown_scope.launcher", logging.WARNING, __file__, 0, text, (), None
        )
        record.event = "log_lines_dropped"
        record.count = count
        return (self.format(record) + "\n").encode("utf-8", "backslashreplace")

    def emit(self, record: logging.LogRecord) -> None:
        """Format ``record`` and write it without blocking."""
        try:
            line = self.format(record) + "\n"
        except Exception:  # noqa: BLE001 -- a bad record must not stop the launcher
            line = f"shutdown-scope: unprintable log record {record.msg!r}\n"
        if self._text is not None:
            self._text.write(line)
            self._text.flush()
            return
        self.stream.write(line.encode("utf-8", "backslashreplace"))

    def flush(self) -> None:
        """Write what waits, as far as stderr takes it now."""
        self.stream.flush()

    def close(self) -> None:
        """Flush once more (without waiting) and close the launcher's description."""
        self.stream.close()
        with contextlib.suppress(ValueError):
            _streams.remove(self.stream)
        super().close()


# The open handlers' streams: the supervisor's loop waits for room in them.
_streams: list[NonBlockingStderr] = []


def attach(logger: logging.Logger, log_format: str, *, quiet: bool) -> StderrHandler:
    """Log ``logger``'s records (INFO and up, or WARNING if ``quiet``) to stderr."""
    handler = StderrHandler(log_format)
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False
    return handler


@contextlib.contextmanager
def room_for_log(selector: selectors.BaseSelector) -> Iterator[None]:
    """While lines wait for room on stderr, ``selector`` also wakes for it."""
    stream = next((x for x in _streams if x.waiting() is not None), None)
    fd = None if stream is None else stream.waiting()
    if stream is None or fd is None:
        yield
        return
    selector.register(fd, selectors.EVENT_WRITE, stream.flush)
    try:
        yield
    finally:
        selector.unregister(fd)
