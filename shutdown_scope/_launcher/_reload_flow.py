"""A reload as it runs: the successor generation started, then ready or failed.

``Reloads`` keeps the requests (one running, at most one queued); the flow
starts each one's successor through ``Children``, tells the manager above
(``RELOADING=1``, then ``READY=1`` whatever the outcome), counts the outcome in
``--metrics-file``, and begins the queued reload once one ends.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ._children import Children
from ._control import Reply
from ._events import event
from ._generation import Generation
from ._metrics_file import MetricsFile, ReloadOutcome
from ._options import Options
from ._reloads import Reloads
from ._spawn import SpawnError

__all__ = ["ReloadFlow", "also", "outcomes"]

logger = logging.getLogger("shutdown_scope.launcher")


class ReloadFlow:
    """The running reload's successor and outcome; ``is_stopping`` bars new ones."""

    def __init__(
        self,
        options: Options,
        children: Children,
        *,
        upstream: Callable[[str], None],
        metrics: MetricsFile | None,
        is_stopping: Callable[[], bool],
    ) -> None:
        self._options = options
        self._children = children
        self._upstream = upstream
        self._metrics = metrics
        self._is_stopping = is_stopping
        self._reloads = Reloads()

    def request(self, reply: Reply | None) -> None:
        """Begin a reload, or queue one (at most one) behind the running one."""
        via = "SIGHUP" if reply is None else "the control socket"
        logger.info(
            "reload requested (%s)", via, extra=event("reload_requested", via=via)
        )
        if self._reloads.request(reply):
            self._begin()

    def _begin(self) -> None:
        number = self._reloads.count
        now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._upstream(f"RELOADING=1\nMONOTONIC_USEC={now_usec}")
        children = self._children
        try:
            children.successor = children.start_generation()
        except SpawnError as error:
            self.fail(error.strerror or str(error))
            return
        except OSError as error:
            started = children.generations_started
            self.fail(f"cannot start generation {started}: {error}")
            return
        logger.info(
            "reload %d: %s started",
            number,
            children.successor,
            extra=event("generation_spawned", children.successor, reload=number),
        )

    def succeed(self, why: str) -> None:
        """The successor took over (``why`` says how)."""
        self._count("done")  # first: whoever hears the outcome sees it
        current = self._children.current  # the successor, already in its place
        serving = None if current is None else current.number
        self._reloads.finish(ok=True, why=why, serving=serving)
        self._upstream("READY=1")
        self._begin_queued()

    def fail(self, why: str) -> None:
        """The reload failed: the serving generation, if any, goes on."""
        if self._reloads.running:
            self._count("failed")
        current = self._children.current
        serving = f"{current} keeps serving" if current else "no generation serves"
        logger.error(
            "reload %d failed: %s; %s",
            self._reloads.count,
            why,
            serving,
            # Failed, the reload is rolled back: the serving generation goes on.
            extra=event(
                "reload_failed",
                reload=self._reloads.count,
                reason=why,
                serving=None if current is None else current.number,
            ),
        )
        self._reloads.finish(ok=False, why=f"{why}; {serving}")
        self._upstream("READY=1")
        self._begin_queued()

    def interrupt(self, why: str) -> None:
        """The launcher stops: the running and the queued reload are refused."""
        if self._reloads.running:
            self._count("interrupted")
        self._reloads.abandon(why)

    def check_ready_timeout(self, now: float, hint: str) -> None:
        """Stop a successor not ready within --ready-timeout; the reload failed."""
        successor = self._children.successor
        timeout = self._options.ready_timeout
        if (
            successor is None
            or self._is_stopping()
            or successor.ready
            or now < successor.started_at + timeout
        ):
            return
        self._children.successor = None
        self._children.retire(successor, self._children.stop_signal())
        refusals = "; ".join(w.refusal() for w in successor.workers if w.refusal())
        self.fail(
            f"{successor} not ready within --ready-timeout {timeout:g} s (stopped)"
            f"{also(refusals)}{hint}{outcomes(self._options, successor)}"
        )

    def _begin_queued(self) -> None:
        if not self._is_stopping() and self._reloads.next():
            self._begin()

    def _count(self, outcome: ReloadOutcome) -> None:
        if self._metrics is None:
            return
        current = self._children.current
        serving = 0 if current is None else current.number
        try:
            self._metrics.reload_ended(outcome, serving)
        except OSError as error:
            logger.warning("cannot write --metrics-file: %s", error.strerror or error)


def outcomes(options: Options, gen: Generation) -> str:
    """`` (how its workers ended)`` under ``--workers``, else nothing."""
    return "" if options.workers is None else f" ({gen.outcomes()})"


def also(text: str) -> str:
    """``text`` as one more clause of a log line, if any."""
    return f"; {text}" if text else ""
