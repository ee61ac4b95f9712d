"""The launcher's notify sockets: each generation's (in), its own supervisor's (out).

In: as with systemd's ``NotifyAccess=main``, a generation's notifications count
only when the kernel vouches (``SCM_CREDENTIALS``) that its main process sent
them: a helper that inherited NOTIFY_SOCKET cannot retire the serving generation.
Out: one datagram per message, never blocking the launcher's loop; what cannot
be sent is dropped and counted, and the relay never turns itself off.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import socket
import struct

from shutdown_scope._sd_protocol import is_state_line, notify_address

TYPE_CHECKING = False  # typing costs milliseconds at the launcher's start
if TYPE_CHECKING:
    from typing import Final, Literal

    NotifyAccess = Literal["main", "all"]

__all__ = ["NOTIFY_ACCESS", "NotifyAccess", "NotifyInbox", "Upstream", "senders_known"]

logger = logging.getLogger("shutdown_scope.launcher")

NOTIFY_ACCESS: Final[tuple[NotifyAccess, ...]] = ("main", "all")

# systemd reads at most PIPE_BUF bytes and drops longer datagrams.
_MAX_DATAGRAM: Final = 4096
# Datagrams read per wakeup: a process flooding its socket cannot starve the loop.
_BATCH: Final = 64
# Senders named in the log per generation: a flood of them is counted, not logged.
_SENDERS_LOGGED: Final = 3
_CREDENTIALS: Final = struct.Struct("iII")  # struct ucred: pid, uid, gid
_PASSCRED: Final[int | None] = getattr(socket, "SO_PASSCRED", None)
_LINE_BREAK: Final = re.compile(r"[\r\n]")
_PID_DIGITS: Final = 9  # Linux pids stay below 2**22: no overflow, ever


class NotifyInbox:
    """A generation's NOTIFY_SOCKET, and who may speak on it.

    ``main_pid`` is the generation's main process: its leader, or the pid it
    named with ``MAINPID=`` (accepted only for a live process of its group).
    """

    def __init__(self, sock: socket.socket, path: str, access: NotifyAccess) -> None:
        self.sock = sock
        self.path = path
        self.access = access
        self.name = "generation"  # for the log, once started
        self.group = 0  # the generation's process group: its leader's pid
        self.main_pid = 0
        self.dropped = 0  # from other processes, oversize or malformed
        self.ready_refused = False  # a READY=1 from another process was dropped
        self.refused_ready: int | None = None  # its sender, if known
        self._senders_logged: set[int] = set()

    @classmethod
    def adopt(cls, sock: socket.socket, path: str, access: NotifyAccess) -> NotifyInbox:
        """Take a datagram socket bound at ``path``; learn each sender's pid.

        Where the system cannot tell senders apart, ``main`` acts as ``all``.
        The socket file stays the runtime directory's to remove.

        Raises:
            OSError: the socket cannot be set up (it is closed then).
        """
        try:
            if _PASSCRED is not None:
                sock.setsockopt(socket.SOL_SOCKET, _PASSCRED, 1)
            sock.setblocking(False)  # noqa: FBT003 -- the stdlib signature
        except BaseException:
            sock.close()
            raise
        return cls(sock, path, access if senders_known() else "all")

    def started(self, name: str, pid: int) -> None:
        """The generation's leader is ``pid``: it alone may notify (``main``)."""
        self.name, self.group, self.main_pid = name, pid, pid

    def __str__(self) -> str:
        return f"{self.name} (pid {self.group})"

    def receive(self) -> list[list[str]]:
        """The accepted datagrams waiting (at most a batch), each as its lines."""
        accepted: list[list[str]] = []
        for _ in range(_BATCH):
            try:
                data, ancdata, flags, _ = self.sock.recvmsg(
                    _MAX_DATAGRAM, socket.CMSG_SPACE(_CREDENTIALS.size)
                )
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break  # closed under us: nothing more to read
            sender = _sender(ancdata)
            lines = self._accept(data, flags, sender)
            if lines:
                accepted.append(self._main_pid_from(lines, sender))
        return accepted

    def _accept(self, data: bytes, flags: int, sender: int | None) -> list[str]:
        data = data.removesuffix(b"\0")  # one trailing NUL is allowed
        # As systemd: an oversize datagram or one with a NUL inside is dropped whole.
        if flags & socket.MSG_TRUNC or b"\0" in data:
            self.dropped += 1
            self._log_once(sender, "an oversize or malformed notification dropped")
            return []
        text = data.decode(errors="replace")
        lines = [line for line in _LINE_BREAK.split(text) if "=" in line]
        if sender == self.main_pid:
            return lines
        ready = "READY=1" in lines
        who = "an unknown process" if sender is None else f"pid {sender}"
        what = f"{'READY=1' if ready else 'a notification'} from {who}"
        if self.access == "main":
            self.dropped += 1
            if ready and not self.ready_refused:
                self.ready_refused, self.refused_ready = True, sender
            self._log_once(
                sender,
                f"{what}, not its main process (pid {self.main_pid}): dropped"
                f" (--notify-access main){self._hint(sender)}",
            )
            return []
        if ready:
            main = f"not its main process (pid {self.main_pid})"
            self._log_once(sender, f"{what}, {main}{self._hint(sender)}")
        return lines

    def _main_pid_from(self, lines: list[str], sender: int | None) -> list[str]:
        """Honour ``MAINPID=`` from an accepted sender if it names a live process
        of the generation's group; the line itself goes no further."""
        kept = []
        for line in lines:
            if not line.startswith("MAINPID="):
                kept.append(line)
                continue
            value = line[len("MAINPID=") :]
            digits = value.isascii() and value.isdigit() and len(value) <= _PID_DIGITS
            pid = int(value) if digits else 0
            if pid == self.main_pid:
                continue
            if self._in_group(pid):
                logger.warning(
                    "%s: main process is now pid %d (MAINPID= from pid %s); if the"
                    " launcher is SIGKILLed, only pid %d is asked to stop",
                    self,
                    pid,
                    sender,
                    self.group,
                )
                self.main_pid = pid
            else:
                self.dropped += 1
                self._log_once(
                    sender, f"MAINPID={value[:20]} ignored: not a process of its group"
                )
        return kept

    def _in_group(self, pid: int) -> bool:
        if pid <= 1 or pid == os.getpid():
            return False
        try:
            return os.getpgid(pid) == self.group
        except (OSError, OverflowError):
            return False

    def _hint(self, sender: int | None) -> str:
        # Most often a shell that ran the program without `exec`: the program is
        # then out of reach of PR_SET_PDEATHSIG if the launcher is SIGKILLed.
        if sender is not None and self._in_group(sender):
            return "; a helper, or a shell or wrapper that did not `exec` the program?"
        return ""

    def _log_once(self, sender: int | None, text: str) -> None:
        key = -1 if sender is None else sender
        if key in self._senders_logged:
            return
        self._senders_logged.add(key)
        if len(self._senders_logged) <= _SENDERS_LOGGED:
            logger.warning("%s: %s", self, text)
        elif len(self._senders_logged) == _SENDERS_LOGGED + 1:
            logger.warning("%s: more senders dropped; counted, not logged", self)

    def close(self) -> None:
        """Close the socket; say how much was dropped."""
        self.sock.close()
        if self.dropped:
            logger.warning("%s: %d notification(s) dropped", self, self.dropped)
            self.dropped = 0


def _sender(ancdata: list[tuple[int, int, bytes]]) -> int | None:
    for level, kind, data in ancdata:
        if (
            level == socket.SOL_SOCKET
            and kind == getattr(socket, "SCM_CREDENTIALS", -1)
            and len(data) >= _CREDENTIALS.size
        ):
            pid: int = _CREDENTIALS.unpack_from(data)[0]
            return pid
    return None


def senders_known() -> bool:
    """Whether this system tells a datagram's sender (Linux's SO_PASSCRED)."""
    return _PASSCRED is not None


class Upstream:
    """The launcher's own NOTIFY_SOCKET (systemd ``Type=notify``).

    Each message is one datagram, sent without waiting: when the supervisor's
    queue is full or the socket is gone, the message is dropped and counted,
    the first failure of each kind is logged, and the next message is tried.
    """

    def __init__(self, value: str) -> None:
        """Raises ValueError: ``value`` is not an address (the message names it)."""
        self._value = value
        self._address = notify_address(value)
        self._sock = socket.socket(
            socket.AF_UNIX,
            socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK,
        )
        self.sent = 0
        self.dropped = 0
        self.cut = 0
        self._logged: set[int] = set()

    def send(self, state: str) -> None:
        """Send ``state`` (``KEY=VALUE`` lines) now, or drop it."""
        data = _fit(state.split("\n"))
        if data is None:
            self._drop(errno.EMSGSIZE, f"nothing of {state[:40]!r}... fits a datagram")
            return
        if len(data) < len(state.encode(errors="replace")):
            self.cut += 1
            if self.cut == 1:
                logger.warning(
                    "a message to the supervisor was shortened: lines that are not"
                    " KEY=VALUE left out, or a STATUS= cut to %d bytes (counted,"
                    " logged once)",
                    _MAX_DATAGRAM,
                )
        try:
            self._sock.sendto(data, self._address)
        except BlockingIOError:
            self._drop(errno.EAGAIN, "its queue is full")
        except OSError as error:
            self._drop(error.errno or errno.EIO, error.strerror or str(error))
        else:
            self.sent += 1

    def _drop(self, code: int, why: str) -> None:
        self.dropped += 1
        if code not in self._logged:
            self._logged.add(code)
            logger.warning(
                "cannot notify the launcher's supervisor (NOTIFY_SOCKET=%r): %s;"
                " message dropped (counted, logged once)",
                self._value,
                why,
            )

    def close(self) -> None:
        """Close the socket; say how many messages were dropped."""
        self._sock.close()
        if self.dropped or self.cut:
            logger.warning(
                "messages to the supervisor: %d sent (%d shortened), %d dropped",
                self.sent,
                self.cut,
                self.dropped,
            )


def _fit(lines: list[str]) -> bytes | None:
    """The lines as one datagram systemd reads whole, or None if none is left.

    Lines that are not ``KEY=VALUE`` (a NUL, an empty line) are left out; a
    STATUS= too long is cut (systemd keeps only the last one anyway).
    """
    valid = [line for line in lines if is_state_line(line)]
    whole = "\n".join(valid).encode(errors="replace")
    if len(whole) <= _MAX_DATAGRAM:
        return whole or None
    others = [line for line in valid if not line.startswith("STATUS=")]
    statuses = [line for line in valid if line.startswith("STATUS=")]
    head = "\n".join(others).encode(errors="replace")
    if len(head) > _MAX_DATAGRAM:
        return None
    if not statuses:
        return head or None
    room = _MAX_DATAGRAM - len(head) - (1 if head else 0)
    status = statuses[-1].encode(errors="replace")[:room]
    status = status.decode(errors="ignore").encode()
    if len(status) <= len("STATUS="):
        return head or None
    return head + b"\n" + status if head else status
