"""The garbage collector during a drain: the heap of before it, frozen."""

from __future__ import annotations

import gc

__all__ = ["DrainHeap"]

# What the interpreter froze by itself before any code of ours ran: 0 up to
# Python 3.11, a few hundred objects of its own from 3.12 on. More than that
# means the process froze objects itself (say, before forking workers).
_STARTUP_FREEZE = gc.get_freeze_count()


class DrainHeap:
    """Leaves the objects that exist when a drain begins out of full collections.

    Closing thousands of connections at once allocates enough to set off full
    collections, each walking every object of every connection: on asyncio,
    most of a 5,000-connection drain (``bench/scale.py``). Frozen
    (``gc.freeze``), those objects are skipped; reference counting still frees
    them. Not done if the process manages the collector itself (it disabled
    it, or froze objects of its own).
    """

    def __init__(self) -> None:
        self._froze = False

    def freeze(self) -> None:
        """The drain begins: freeze the heap (unless the process manages it)."""
        if (
            not self._froze
            and gc.isenabled()
            and gc.get_freeze_count() <= _STARTUP_FREEZE
        ):
            gc.freeze()
            self._froze = True

    def thaw(self) -> None:
        """The drain is over: the collector sees those objects again."""
        if self._froze:
            self._froze = False
            gc.unfreeze()
