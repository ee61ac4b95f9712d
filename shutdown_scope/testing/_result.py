"""What a rehearsal saw: ``Rehearsal``, and ``RehearsalError`` when it could not run."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from shutdown_scope import ShutdownReport, ShutdownScopeError

__all__ = ["Rehearsal", "RehearsalError"]


class RehearsalError(ShutdownScopeError, RuntimeError):
    """The rehearsal could not be carried out: the server never answered, exited
    before the signal, or (``reload=True``) was not replaced."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Rehearsal:
    """What a rehearsal saw: the fate of every request, the exit, the reports.

    Attributes:
        answered: requests that got a complete response (of any status),
            the first GET that found the server ready included.
        lost: requests that got no complete response on a connection that had
            not been closed idle: the server broke it with the request read,
            or in the middle of the answer.
        refused: connection attempts refused; a refused client retries every
            5 ms. Expected once a stopping server has closed its listener.
        refused_before_stop: of ``refused``, those before the stopping signal:
            under ``reload=True``, 0 is a reload without downtime.
        reset: of ``lost``, those whose connection the server reset.
        closed_idle: requests on a reused keep-alive connection that the
            server closed without answering: HTTP lets a client retry them, as
            the server closed an idle connection before reading them. (A
            server that dies with keep-alive requests in flight shows them here
            too: a client cannot tell the two apart; ``exit_code`` and the
            report can.)
        closed_by_server: connections the server ended after an answer that
            said ``Connection: close``, as a draining server does.
        statuses: answers by HTTP status.
        exit_code: the server's exit status as ``subprocess`` gives it: -N if
            signal N ended it.
        exited_after: seconds from the stopping signal to the server's exit.
        killed: it still ran ``grace_period`` seconds after the signal, so it
            was killed (SIGKILL), as an orchestrator would.
        reports: each ``ShutdownReport`` the server wrote through
            ``SHUTDOWN_SCOPE_REPORT_FILE``, in order: its own (a server run by
            ``shutdown_scope.run()``); under ``reload=True`` the replaced
            generation's, then the last one's. None from a server that does not
            use ``run()``, or that was ended before it could write one.
        output: the server's stdout and stderr, merged.
    """

    answered: int
    lost: int
    refused: int
    refused_before_stop: int
    reset: int
    closed_idle: int
    closed_by_server: int
    statuses: Mapping[int, int]
    exit_code: int
    exited_after: float
    killed: bool
    reports: tuple[ShutdownReport, ...]
    output: str = field(repr=False)

    @property
    def report(self) -> ShutdownReport:
        """The first report: the server's own (under ``reload=True``, that of
        the generation the reload replaced).

        Raises:
            RehearsalError: the server wrote no report (it does not run under
                ``shutdown_scope.run()``, or was ended first: see ``exit_code``).
        """
        if not self.reports:
            msg = (
                f"the server wrote no report (exit code {self.exit_code}): it does"
                " not run under shutdown_scope.run(), or it was ended before"
                f" run() returned; {self}"
            )
            raise RehearsalError(msg)
        return self.reports[0]

    def __str__(self) -> str:
        by_status = ", ".join(f"{n}x {s}" for s, n in sorted(self.statuses.items()))
        killed = ", killed after the grace period" if self.killed else ""
        return (
            f"{self.answered} answered ({by_status or 'none'}), {self.lost} lost"
            f" ({self.reset} reset), {self.refused} refused"
            f" ({self.refused_before_stop} before the stop), {self.closed_idle}"
            f" closed idle; exit code {self.exit_code} after"
            f" {self.exited_after * 1000:.0f} ms{killed}; {len(self.reports)} report(s)"
        )
