"""What ``shutdown-scope run`` was asked to do, as the supervisor reads it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from ._readiness import ReadyMode

TYPE_CHECKING = False  # typing costs milliseconds at the launcher's start
if TYPE_CHECKING:
    from ._notify import NotifyAccess

__all__ = ["Options"]


@dataclass(frozen=True)
class Options:
    """What ``shutdown-scope run`` was asked to do.

    ``workers`` None: one child per generation whose exit ends the launcher;
    a number: that many workers, each replaced if it dies on its own.
    """

    command: Sequence[str]
    rewrite: dict[int, int] = field(default_factory=dict)
    grace_period: float = math.inf
    ready_timeout: float = 30.0
    debounce: float = 0.2
    notify_access: NotifyAccess = "main"
    ready: ReadyMode = field(default_factory=ReadyMode)
    workers: int | None = None
