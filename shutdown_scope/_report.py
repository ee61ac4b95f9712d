"""ShutdownReport: what a shutdown did, phase by phase, as a frozen value."""

from __future__ import annotations

import traceback
from collections import Counter
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Literal

from ._labels import printable_label
from ._phases import Phase

__all__ = [
    "PhaseRecord",
    "ServiceOutcome",
    "ServiceRecord",
    "ShutdownReport",
    "TriggerKind",
    "report_sink",
]

TriggerKind = Literal["signal", "request", "error", "finished", "cancelled"]
"""What started the shutdown: a signal, ``request_shutdown()``, a failing service
or body, everything returning on its own, or cancellation from outside."""

ServiceOutcome = Literal[
    "returned", "stopped", "cancelled", "failed", "abandoned", "not started"
]
"""How a service ended: returned on its own; ``stopped`` (cancelled with nothing in
flight: the normal end of a service that does not watch its token); ``cancelled``
with work in flight (that work is lost); raised (``failed``); ignored cancellation
past the deadline (``abandoned``); or stopped before it called ``started()``."""

# run() puts a list here; each graceful_scope appends its report when it ends.
report_sink: ContextVar[list[ShutdownReport] | None] = ContextVar(
    "shutdown_scope_report_sink", default=None
)


def _counted(labels: Iterable[str]) -> str:
    counts = Counter(labels)
    if not counts:
        return "nothing"
    shown = (
        (printable_label(label), n) for label, n in sorted(counts.items())
    )  # a label may be a client's request path: one line, escaped
    return ", ".join(label if n == 1 else f"{label} x{n}" for label, n in shown)


@dataclass(frozen=True, slots=True, kw_only=True)
class PhaseRecord:
    """One phase of the scope: when it began (seconds after the trigger), how
    long it lasted, and the labels in flight when it began."""

    phase: Phase
    started: float
    duration: float
    in_flight: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceRecord:
    """One service: how it ended, when it was asked to stop and when it finished
    (seconds after the trigger; None if before it or never), and what was in
    flight when it was cancelled."""

    name: str
    outcome: ServiceOutcome
    stop_requested_at: float | None
    finished_at: float | None
    cancelled_in_flight: tuple[str, ...]
    error: str | None

    @property
    def stopped_while_starting(self) -> bool:
        """The shutdown stopped it before it called ``started()``: its start
        was cut short (``start()`` raised ``ServiceNotStartedError``)."""
        return (
            self.outcome == "not started"
            and self.error is None
            and self.stop_requested_at is not None
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ShutdownReport:
    """What a ``graceful_scope`` did, from its trigger to its end.

    Times are seconds on anyio's clock, measured from the trigger. ``clean`` is
    True when nothing in flight had to be cancelled, nothing failed and no
    service was stopped while starting; then ``exit_code`` is 0, otherwise 1
    (a hard exit from the watchdog never returns a report: the process is
    gone, with 128 + the signal number by default).
    """

    trigger: TriggerKind
    reason: str
    signal: int | None
    signals_received: int
    phases: tuple[PhaseRecord, ...]
    services: tuple[ServiceRecord, ...]
    errors: tuple[Exception, ...]
    duration: float

    @property
    def cancelled_in_flight(self) -> tuple[str, ...]:
        """Every label that was in flight when its service was cancelled."""
        return tuple(
            label for svc in self.services for label in svc.cancelled_in_flight
        )

    @property
    def clean(self) -> bool:
        """Nothing in flight was cancelled, no service was abandoned, none
        failed, none was stopped while starting."""
        return not (
            self.errors
            or self.cancelled_in_flight
            or any(
                s.outcome in {"abandoned", "failed"} or s.stopped_while_starting
                for s in self.services
            )
        )

    @property
    def exit_code(self) -> int:
        """0 after a clean stop, 1 otherwise."""
        return 0 if self.clean else 1

    def phase(self, phase: Phase) -> PhaseRecord | None:
        """The record of ``phase``, or None if the scope never entered it."""
        return next((r for r in self.phases if r.phase == phase), None)

    def as_dict(self) -> dict[str, object]:
        """A JSON-safe dict for structured logs."""
        return {
            "trigger": self.trigger,
            "reason": self.reason,
            "signal": self.signal,
            "signals_received": self.signals_received,
            "clean": self.clean,
            "exit_code": self.exit_code,
            "duration": self.duration,
            "phases": [
                {
                    "phase": r.phase.name,
                    "started": r.started,
                    "duration": r.duration,
                    "in_flight": list(r.in_flight),
                }
                for r in self.phases
            ],
            "services": [
                {
                    "name": s.name,
                    "outcome": s.outcome,
                    "stop_requested_at": s.stop_requested_at,
                    "finished_at": s.finished_at,
                    "cancelled_in_flight": list(s.cancelled_in_flight),
                    "error": s.error,
                }
                for s in self.services
            ],
            "errors": [
                "".join(traceback.format_exception_only(type(e), e)).strip()
                for e in self.errors
            ],
        }

    def __str__(self) -> str:
        verdict = "clean" if self.clean else "NOT clean"
        lines = [
            (
                f"shutdown {verdict} (exit code {self.exit_code}) after"
                f" {self.duration * 1000:.1f} ms; trigger: {self.trigger}"
                f" ({printable_label(self.reason)})"
            )
        ]
        lines.extend(
            f"  {r.phase.name:<10} +{r.started * 1000:8.1f} ms"
            f"  {r.duration * 1000:8.1f} ms  in flight: {_counted(r.in_flight)}"
            for r in self.phases
        )
        for s in self.services:
            line = f"  service {s.name!r}: {s.outcome}"
            if s.stopped_while_starting:
                line += " (stopped while starting)"
            if s.finished_at is not None:
                line += f" at +{s.finished_at * 1000:.1f} ms"
            if s.cancelled_in_flight:
                line += f"; cancelled in flight: {_counted(s.cancelled_in_flight)}"
            if s.error:
                line += f"; error: {s.error}"
            lines.append(line)
        return "\n".join(lines)
