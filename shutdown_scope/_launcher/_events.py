"""The ``event`` fields of the launcher's log records (``--log-format json``).

Each key record says what happened in an ``event`` name and fields, given to
the logger with ``extra=``, so that a log pipeline or a test reads events, not
sentences. The text format shows only the sentence.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ._generation import Generation, Worker
from ._signal_routing import signal_name

TYPE_CHECKING = False  # typing costs milliseconds before the first child starts
if TYPE_CHECKING:
    from typing import Any

__all__ = ["child_exited", "event", "forwarded", "log"]

logger = logging.getLogger("shutdown_scope.launcher")


def event(
    name: str, about: Worker | Generation | None = None, **fields: Any
) -> dict[str, Any]:
    """``extra=`` for a record of event ``name`` about a worker or generation."""
    found: dict[str, Any] = {"event": name}
    if isinstance(about, Worker):
        found.update(generation=about.generation, pid=about.pid)
        if about.index is not None:
            found["worker"] = about.index
    elif isinstance(about, Generation):
        found.update(generation=about.number, pids=[w.pid for w in about.workers])
    found.update(fields)
    return found


def log(
    level: int,
    name: str,
    text: str,
    about: Worker | Generation | None = None,
    **fields: Any,
) -> None:
    """Log ``text`` as event ``name`` (see ``event``)."""
    logger.log(level, "%s", text, extra=event(name, about, **fields))


def child_exited(
    worker: Worker, how: str, *, on_its_own: bool = False, then: str = ""
) -> None:
    """``generation 2 (pid 9) exited: exit code 0``, event ``child_exited``."""
    level = logging.WARNING if on_its_own else logging.INFO
    if then.endswith("crash loop, stopping"):
        level = logging.ERROR
    log(
        level,
        "child_exited",
        f"{worker} exited{' on its own' if on_its_own else ''}: {how}{then}",
        worker,
        exit_code=worker.exit_code,
        on_its_own=on_its_own,
    )


def forwarded(sig: int, sent: int, targets: Sequence[Worker]) -> None:
    """``SIGUSR1 forwarded to generation 1 (pid 9)``, event ``signal_forwarded``."""
    names = ", ".join(str(w) for w in targets) or "no child"
    shown = signal_name(sig) + ("" if sent == sig else f" as {signal_name(sent)}")
    log(
        logging.INFO,
        "signal_forwarded",
        f"{shown} forwarded to {names}",
        signal=signal_name(sig),
        sent_as=signal_name(sent),
        pids=[w.pid for w in targets],
    )
