"""The sd_notify protocol on the wire, and the variables a service manager sets.

The protocol (``man sd_notify``): one datagram of ``KEY=VALUE`` lines to the
AF_UNIX socket named by ``NOTIFY_SOCKET``. Synchronous and free of anyio: the
launcher (``shutdown-scope run``) uses it too, and must start fast.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping

from ._manager_environ import manager_environ

TYPE_CHECKING = False  # typing costs milliseconds at the launcher's start
if TYPE_CHECKING:
    from typing import Final

__all__ = [
    "MANAGER_VARIABLES",
    "connect",
    "decimal",
    "encode_state",
    "failure",
    "is_state_line",
    "notify_address",
    "send",
    "watchdog_interval",
]

# What a service manager (systemd, the launcher) tells the one process it started:
# never to be passed on to that process's own children as is.
MANAGER_VARIABLES: Final = (
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
)

_LINE: Final = re.compile(r"[A-Z][A-Z0-9_]*=[^\n\0]*")
_DECIMAL: Final = re.compile(r"[0-9]+")  # ASCII only: int() takes other digits
_LARGEST: Final = 10**18 - 1  # any larger number in these variables is nonsense
# systemd reads at most PIPE_BUF bytes and drops longer datagrams.
_MAX_DATAGRAM: Final = 4096
# Python's sockets are non-inheritable anyway; the flag makes it atomic.
_CLOEXEC: Final = getattr(socket, "SOCK_CLOEXEC", 0)


def decimal(name: str, value: str, *, minimum: int = 0, maximum: int = _LARGEST) -> int:
    """Parse an environment variable holding a decimal integer in a range.

    Only ASCII digits: no sign, spaces, underscores or other scripts' digits.

    Raises:
        ValueError: anything else; the message names the variable and its value.
    """
    if not _DECIMAL.fullmatch(value):
        number = minimum - 1
    elif len(value.lstrip("0")) > len(str(maximum)):
        number = maximum + 1  # int() of it could take long, or refuse
    else:
        number = int(value.lstrip("0") or "0")
    if number < minimum:
        msg = f"{name} must be a decimal integer >= {minimum}, not {value!r}"
        raise ValueError(msg)
    if number > maximum:
        msg = f"{name} must be a decimal integer <= {maximum}, not {value!r}"
        raise ValueError(msg)
    return number


def encode_state(state: str) -> bytes:
    """Check a notification and encode it.

    Raises:
        TypeError: not a str.
        ValueError: not lines of ``KEY=VALUE`` (one trailing newline is fine),
            or longer than systemd reads.
    """
    if not isinstance(state, str):
        msg = f"state must be a str such as 'READY=1', not {state!r}"
        raise TypeError(msg)
    lines = state.split("\n")
    if len(lines) > 1 and not lines[-1]:
        lines.pop()
    bad = next((line for line in lines if not _LINE.fullmatch(line)), None)
    if bad is not None:
        msg = (
            "state must be non-empty lines of KEY=VALUE with KEY in capitals, such"
            f" as 'READY=1' or 'STATUS=warming cache'; not {bad!r} in {state!r}"
        )
        raise ValueError(msg)
    data = state.encode()
    if len(data) > _MAX_DATAGRAM:
        msg = f"state must be at most {_MAX_DATAGRAM} bytes, not {len(data)}"
        raise ValueError(msg)
    return data


def is_state_line(line: str) -> bool:
    """Whether ``line`` is one ``KEY=VALUE`` line (KEY in capitals, no NUL)."""
    return _LINE.fullmatch(line) is not None


def notify_address(value: str) -> str:
    """The socket address for NOTIFY_SOCKET's ``value`` (``@name``: abstract).

    Raises:
        ValueError: neither an absolute path nor ``@name``.
    """
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]  # Linux's abstract namespace
    msg = (
        "NOTIFY_SOCKET must be an absolute path or an abstract name '@name',"
        f" not {value!r}"
    )
    raise ValueError(msg)


def failure(value: str, exc: OSError) -> OSError:
    """The error ``exc`` as an OSError that names the socket; errno is kept."""
    msg = f"cannot notify NOTIFY_SOCKET={value!r}: {exc.strerror or exc}"
    return OSError(msg) if exc.errno is None else OSError(exc.errno, msg)


def connect(value: str) -> socket.socket:
    """A datagram socket connected to the notify socket ``value``.

    Raises:
        ValueError: ``value`` is not an address this module can reach.
        OSError: the socket cannot be reached (the message names it).
    """
    address = notify_address(value)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | _CLOEXEC)
    try:
        sock.connect(address)
    except OSError as exc:
        sock.close()
        raise failure(value, exc) from exc
    return sock


def send(state: str, environ: Mapping[str, str] | None = None) -> bool:
    r"""Send ``state`` to the service manager, as ``sd_notify(0, state)`` does.

    Blocks (briefly) like ``sd_notify`` if the manager's queue is full.

    Args:
        state: lines of ``KEY=VALUE``, e.g. ``"READY=1\nSTATUS=running"``.
        environ: where to find ``NOTIFY_SOCKET``; ``os.environ`` by default
            (where a scope may have taken it from: it is still found).

    Returns:
        True when sent; False when ``NOTIFY_SOCKET`` is unset or empty (not
        running under a manager that listens).

    Raises:
        TypeError, ValueError: ``state`` is not a valid notification, or
            ``NOTIFY_SOCKET`` is neither an absolute path nor ``@name``.
        OSError: it could not be sent; the message names the socket, the errno
            is the system's.
    """
    data = encode_state(state)
    value = manager_environ(environ).get("NOTIFY_SOCKET", "")
    if not value:
        return False
    with connect(value) as sock:
        try:
            sock.send(data)
        except OSError as exc:
            raise failure(value, exc) from exc
    return True


def watchdog_interval(environ: Mapping[str, str]) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings (half of ``WATCHDOG_USEC``), or None
    when the watchdog is off or meant for another process (``WATCHDOG_PID``).

    Raises:
        ValueError: a malformed variable (the message names it).
    """
    usec = environ.get("WATCHDOG_USEC", "")
    if not usec:
        return None
    interval = decimal("WATCHDOG_USEC", usec, minimum=1) / 2_000_000
    pid = environ.get("WATCHDOG_PID", "")
    if pid and decimal("WATCHDOG_PID", pid, minimum=1) != os.getpid():
        return None
    return interval
