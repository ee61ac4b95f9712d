"""``run --ready accepting`` and ``after:S``: when to look, and what is found.

Without ``READY=1`` the launcher finds out itself whether a worker is ready:
``after:S`` once S seconds have passed since its start, ``accepting`` by a look
in /proc every ``PROBE_INTERVAL`` until it waits on a handed socket.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator

from ._generation import Generation, Worker
from ._options import ReadyMode
from ._readiness import PROBE_INTERVAL, is_accepting, socket_inodes

__all__ = ["Probes"]


class Probes:
    """The launcher's looks for readiness, under one ``--ready`` mode."""

    def __init__(self, ready: ReadyMode, listening_fds: Collection[int]) -> None:
        self._ready = ready
        # What --ready accepting looks for in the workers' epoll sets.
        self._inodes = socket_inodes(listening_fds)

    def unready(self, gens: Iterable[Generation | None]) -> list[Worker]:
        """The workers of ``gens`` whose readiness the launcher must find out."""
        if self._ready.kind == "notify":
            return []
        return [
            w
            for gen in gens
            if gen is not None
            for w in gen.workers
            if not w.ready and w.exit_code is None
        ]

    def deadline(self, worker: Worker) -> float:
        """When ``worker`` is next looked at (``after:S``: when it is ready)."""
        if self._ready.kind == "after":
            return worker.started_at + self._ready.seconds
        return worker.next_probe

    def found_ready(self, workers: Iterable[Worker], now: float) -> Iterator[Worker]:
        """Each of ``workers`` found ready now, marked so; lazily, one by one."""
        for worker in workers:
            if now < self.deadline(worker):
                continue
            if self._ready.kind == "accepting":
                # Bounded work per look; the next one a short while later.
                worker.next_probe = now + PROBE_INTERVAL
                if not is_accepting(worker.pid, self._inodes):
                    continue
            worker.ready = True
            yield worker

    def never_accepted(self) -> str:
        """A hint for a successor that was not ready in time, if one applies."""
        if self._ready.kind != "accepting":
            return ""
        return "; --ready accepting: it never waited for connections on a handed socket"
