"""What ``shutdown-scope run`` was asked to do, as the supervisor reads it.

Plain slotted classes, not dataclasses: they are built before the first
generation starts, and ``dataclasses`` imports ``inspect`` and ``ast``
(milliseconds of the launcher's start). Neither is changed once made.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

TYPE_CHECKING = False  # typing costs milliseconds at the launcher's start
if TYPE_CHECKING:
    from typing import Literal

    from ._notify import NotifyAccess

__all__ = ["Options", "ReadyMode"]


class ReadyMode:
    """How the launcher learns that a generation is ready (``--ready``).

    ``notify``: its main process sends ``READY=1``; ``accepting``: it waits for
    connections on a handed socket; ``after``: ``seconds`` after its start.
    """

    __slots__ = ("kind", "seconds")

    def __init__(
        self,
        *,
        kind: Literal["notify", "accepting", "after"] = "notify",
        seconds: float = 0.0,
    ) -> None:
        self.kind: Literal["notify", "accepting", "after"] = kind
        self.seconds = seconds

    def __str__(self) -> str:
        return f"after:{self.seconds:g}" if self.kind == "after" else self.kind

    def __repr__(self) -> str:
        return f"ReadyMode(kind={self.kind!r}, seconds={self.seconds!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ReadyMode):
            return NotImplemented
        return (self.kind, self.seconds) == (other.kind, other.seconds)

    def __hash__(self) -> int:
        return hash((self.kind, self.seconds))


class Options:
    """What ``shutdown-scope run`` was asked to do.

    ``workers`` None: one child per generation whose exit ends the launcher;
    a number: that many workers, each replaced if it dies on its own.
    """

    __slots__ = (
        "command",
        "debounce",
        "grace_period",
        "notify_access",
        "ready",
        "ready_timeout",
        "rewrite",
        "workers",
    )

    def __init__(
        self,
        *,
        command: Sequence[str],
        rewrite: dict[int, int] | None = None,
        grace_period: float = math.inf,
        ready_timeout: float = 30.0,
        debounce: float = 0.2,
        notify_access: NotifyAccess = "main",
        ready: ReadyMode | None = None,
        workers: int | None = None,
    ) -> None:
        self.command = command
        self.rewrite = {} if rewrite is None else rewrite
        self.grace_period = grace_period
        self.ready_timeout = ready_timeout
        self.debounce = debounce
        self.notify_access: NotifyAccess = notify_access
        self.ready = ReadyMode() if ready is None else ready
        self.workers = workers

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"Options({fields})"
