"""``run --workers N``: when a worker that died on its own is started again.

A worker that exits without being asked to (a crash, an OOM kill, ``kill -9``)
is replaced after a backoff that doubles with each recent death of that index;
``CRASH_LIMIT`` deaths within ``CRASH_WINDOW`` seconds are a crash loop, and the
launcher gives up rather than spin.
"""

from __future__ import annotations

import math
from typing import Final

__all__ = ["CRASH_LIMIT", "CRASH_WINDOW", "Respawns"]

CRASH_LIMIT: Final = 5
CRASH_WINDOW: Final = 10.0
_FIRST_DELAY: Final = 0.1
_LONGEST_DELAY: Final = 5.0


class Respawns:
    """The serving generation's dead workers: their recent deaths, when each returns."""

    def __init__(self) -> None:
        self._deaths: dict[int, list[float]] = {}
        self._due: dict[int, float] = {}

    def died(self, index: int, now: float) -> float | None:
        """Worker ``index`` died at ``now``: the delay before its replacement, or
        None if that makes a crash loop."""
        recent = [t for t in self._deaths.get(index, []) if now - t < CRASH_WINDOW]
        recent.append(now)
        self._deaths[index] = recent
        if len(recent) >= CRASH_LIMIT:
            return None
        delay: float = min(_FIRST_DELAY * 2.0 ** (len(recent) - 1), _LONGEST_DELAY)
        self._due[index] = now + delay
        return delay

    def next_due(self) -> float:
        """When the next replacement is due (inf if none is)."""
        return min(self._due.values(), default=math.inf)

    def take_due(self, now: float) -> list[int]:
        """The indexes whose replacement is due now (taken off the list)."""
        due = sorted(i for i, at in self._due.items() if at <= now)
        for index in due:
            del self._due[index]
        return due

    def clear(self) -> None:
        """A new generation serves (or none will): forget the old one's deaths."""
        self._deaths.clear()
        self._due.clear()
