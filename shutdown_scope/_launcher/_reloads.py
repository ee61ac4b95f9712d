"""Reload requests: one runs at a time, at most one more waits, callers hear back."""

from __future__ import annotations

import logging

from ._control import Reply

__all__ = ["Reloads"]

logger = logging.getLogger("shutdown_scope.launcher")


class _Request:
    """One reload's callers: they all hear its outcome."""

    def __init__(self, reply: Reply | None) -> None:
        self.replies: list[Reply] = [] if reply is None else [reply]


class Reloads:
    """The running reload, the queued one, and how many have begun."""

    def __init__(self) -> None:
        self._running: _Request | None = None
        self._queued: _Request | None = None
        self.count = 0

    @property
    def running(self) -> bool:
        """A reload has begun and has no outcome yet."""
        return self._running is not None

    def request(self, reply: Reply | None) -> bool:
        """Ask for a reload; True if it should begin now (it is then counted)."""
        if self._running is None:
            self._running = _Request(reply)
            self.count += 1
            return True
        if self._queued is None:
            self._queued = _Request(None)
            logger.info("reload %d in progress: one more reload queued", self.count)
        else:
            logger.info(
                "reload %d in progress and one queued: this request joins it",
                self.count,
            )
        if reply is not None:
            self._queued.replies.append(reply)
        return False

    def finish(self, *, ok: bool, why: str, serving: int | None = None) -> None:
        """The running reload's outcome, to its callers (``serving``: the
        number of the generation that took over, when ``ok``)."""
        request, self._running = self._running, None
        if ok:
            logger.info(
                "reload %d: done; %s",
                self.count,
                why,
                extra={
                    "event": "reload_succeeded",
                    "reload": self.count,
                    "serving": serving,
                },
            )
        if request is not None:
            for reply in request.replies:
                reply(ok=ok, text=f"reload {self.count}: {why}")

    def next(self) -> bool:
        """Begin the queued reload, if any; True if one began (it is counted)."""
        if self._running is not None or self._queued is None:
            return False
        self._running, self._queued = self._queued, None
        self.count += 1
        return True

    def abandon(self, why: str) -> None:
        """Refuse the running and the queued reload (the launcher stops)."""
        self.finish(ok=False, why=why)
        queued, self._queued = self._queued, None
        if queued is not None:
            for reply in queued.replies:
                reply(ok=False, text=f"reload {self.count}: {why}")
