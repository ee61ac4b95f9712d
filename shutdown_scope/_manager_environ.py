"""The service manager's variables a scope takes out of ``os.environ``.

Child processes must not inherit NOTIFY_SOCKET and the rest: they would speak
for the service (sd_notify's ``unset_environment``). This process still uses
them, so they are kept here once taken.
"""

from __future__ import annotations

import os
import threading
from collections import ChainMap
from collections.abc import Mapping

TYPE_CHECKING = False  # typing costs milliseconds at the launcher's start
if TYPE_CHECKING:
    from typing import Final

__all__ = ["manager_environ", "take_notify_variables"]

# What a scope takes out of os.environ so that its child processes do not inherit
# it (sd_notify's unset_environment), with the launcher's SHUTDOWN_SCOPE_*.
_NOTIFY_VARIABLES: Final = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
_OWN_PREFIX: Final = "SHUTDOWN_SCOPE_"
# Their values once taken: this process still uses them. Process-wide, as the
# environment they came from; written under the lock.
_TAKEN: Final[dict[str, str]] = {}
_TAKEN_LOCK: Final = threading.Lock()


def take_notify_variables() -> None:
    """Move NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID and SHUTDOWN_SCOPE_* out of
    ``os.environ``: child processes do not inherit them, and ``manager_environ``
    still has them for this process. Variables set again later are taken anew."""
    with _TAKEN_LOCK:
        names = [
            name
            for name in list(os.environ)
            if name in _NOTIFY_VARIABLES or name.startswith(_OWN_PREFIX)
        ]
        if "NOTIFY_SOCKET" in names:
            _TAKEN.clear()  # a new manager's variables do not mix with the old's
        for name in names:
            value = os.environ.pop(name, None)
            if value is not None:
                _TAKEN[name] = value


def manager_environ(environ: Mapping[str, str] | None = None) -> Mapping[str, str]:
    """Where to read the manager's variables: ``environ``; for ``os.environ``
    (the default), with those a scope took out of it."""
    if environ is None or environ is os.environ:
        with _TAKEN_LOCK:
            return ChainMap(dict(os.environ), dict(_TAKEN))
    return environ
