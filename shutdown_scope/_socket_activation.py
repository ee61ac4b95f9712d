"""Socket activation's variables (``LISTEN_FDS``, ``LISTEN_PID``, ``LISTEN_FDNAMES``).

One parser for ``systemd.listen_fds_with_names()`` and for the launcher, which
adopts the sockets systemd passes to it. It follows ``sd_listen_fds_with_names(3)``:
``LISTEN_FDS`` fds from fd 3 on, for the process ``LISTEN_PID`` only, named by
``LISTEN_FDNAMES`` (``"unknown"`` without it). Stricter where systemd would hand
over nonsense: an empty name, a count that no process can have open, an fd that
is not an open socket are errors. Synchronous and free of anyio.
"""

from __future__ import annotations

import errno
import itertools
import os
import stat
from collections.abc import Collection, Iterable, Mapping

from ._sd_protocol import decimal

TYPE_CHECKING = False  # typing costs milliseconds at the launcher's start
if TYPE_CHECKING:
    from typing import Final

__all__ = ["LISTEN_VARIABLES", "SD_LISTEN_FDS_START", "passed_fds"]

SD_LISTEN_FDS_START: Final = 3
"""The first fd passed by socket activation."""

LISTEN_VARIABLES: Final = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")

# sd_listen_fds(3): fds are C ints, so at most INT_MAX - 3 of them.
_MOST_FDS: Final = 2**31 - 1 - SD_LISTEN_FDS_START


def passed_fds(
    environ: Mapping[str, str], *, opened_here: Collection[int] = ()
) -> list[tuple[int, str]]:
    """The fds passed to this process, checked: ``[(3, "web"), (4, "admin")]``.

    Nothing here allocates by the count: a huge ``LISTEN_FDS`` fails at the
    first fd that is not open, or at the bound, never with a MemoryError.

    Args:
        environ: where to read the variables.
        opened_here: fds this process has opened itself since it started
            (they were free then, so not passed): reported as not open.

    Returns:
        ``[]`` when ``LISTEN_FDS`` or ``LISTEN_PID`` is unset, or ``LISTEN_PID``
        is another process's pid (we may be its child).

    Raises:
        ValueError: a malformed variable (``LISTEN_PID``/``LISTEN_FDS`` not an
            ASCII decimal in range, ``LISTEN_FDNAMES`` not one non-empty name
            per fd), or an fd that is not a socket; the message names it.
        OSError: an fd is not open (``EBADF``); the message names it.
    """
    count, pid = environ.get("LISTEN_FDS"), environ.get("LISTEN_PID")
    if count is None or pid is None:
        return []
    if decimal("LISTEN_PID", pid, minimum=1) != os.getpid():
        return []
    n = decimal("LISTEN_FDS", count, maximum=_MOST_FDS)
    raw = environ.get("LISTEN_FDNAMES")
    names: Iterable[str]
    if raw is None:
        # "unknown": systemd's name for an fd whose unit gives it none.
        names = itertools.repeat("unknown", n)
    else:
        given = raw.split(":") if raw else []
        if len(given) != n or "" in given:
            msg = (
                f"LISTEN_FDNAMES must hold {n} non-empty name(s), one per fd of"
                f" LISTEN_FDS={count!r}, separated by ':'; not {raw!r}"
            )
            raise ValueError(msg)
        names = given
    passed = []
    for fd, name in zip(itertools.count(SD_LISTEN_FDS_START), names):
        try:
            if fd in opened_here:
                raise OSError(errno.EBADF, os.strerror(errno.EBADF))  # noqa: TRY301
            mode = os.fstat(fd).st_mode
        except OSError as exc:
            msg = f"LISTEN_FDS: fd {fd} ({name}) is not open: {exc.strerror}"
            raise OSError(exc.errno, msg) from exc
        if not stat.S_ISSOCK(mode):
            msg = f"LISTEN_FDS: fd {fd} ({name}) is not a socket"
            raise ValueError(msg)
        passed.append((fd, name))
    return passed
