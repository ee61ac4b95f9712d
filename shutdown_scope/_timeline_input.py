"""What a timeline draws: a ShutdownReport's ``as_dict()`` checked into values.

The drawing works from the JSON-safe dict, not the live report, so a report
read back from a JSON log draws the same as the report itself. Every field is
checked here, with an error that names it; keys this version does not know are
ignored, so a report from a newer version still draws.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["Budgets", "Deadline", "TimelineInput", "read_report"]

_BUDGET_NAMES = ("announce_delay", "drain_timeout", "cancel_timeout", "grace_period")


@dataclass(frozen=True, slots=True, kw_only=True)
class PhaseSpan:
    """One phase: seconds after the trigger, and the labels in flight at its start."""

    name: str
    started: float
    duration: float
    in_flight: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceSpan:
    """One service's end, as the report's ``services`` entry says."""

    name: str
    outcome: str
    stop_requested_at: float | None
    finished_at: float | None
    cancelled_in_flight: tuple[str, ...]
    error: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Deadline:
    """A line on the time axis: what it is and when (seconds after the trigger)."""

    name: str
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Budgets:
    """The scope's budgets, in seconds; None where not known."""

    announce_delay: float | None = None
    drain_timeout: float | None = None
    cancel_timeout: float | None = None
    grace_period: float | None = None

    def deadlines(self, phases: Sequence[PhaseSpan]) -> tuple[Deadline, ...]:
        """Where the scope's deadlines fell, computed as the phase machine does.

        The drain deadline is ``announce_delay + drain_timeout`` after the
        trigger; the cancel deadline ``cancel_timeout`` after CANCELLING began
        (earlier than the drain deadline when a second signal escalated), or
        after the drain deadline if the scope never cancelled; the grace
        period is when the orchestrator sends SIGKILL. An unknown
        ``announce_delay`` counts as 0, graceful_scope's default.
        """
        found: list[Deadline] = []
        announce = self.announce_delay or 0.0
        if self.announce_delay:
            found.append(Deadline(name="announce ends", at=announce))
        drain = None if self.drain_timeout is None else announce + self.drain_timeout
        if drain is not None:
            found.append(Deadline(name="drain deadline", at=drain))
        cancelling = next((p for p in phases if p.name == "CANCELLING"), None)
        if self.cancel_timeout is not None:
            start = drain if cancelling is None else cancelling.started
            if start is not None:
                found.append(
                    Deadline(name="cancel deadline", at=start + self.cancel_timeout)
                )
        if self.grace_period is not None:
            found.append(Deadline(name="SIGKILL (grace period)", at=self.grace_period))
        return tuple(d for d in found if math.isfinite(d.at))


@dataclass(frozen=True, slots=True, kw_only=True)
class TimelineInput:
    """Everything a timeline shows, checked."""

    trigger: str
    reason: str
    signals_received: int
    clean: bool
    exit_code: int
    duration: float
    phases: tuple[PhaseSpan, ...]
    services: tuple[ServiceSpan, ...]
    errors: tuple[str, ...]
    deadlines: tuple[Deadline, ...]


def _field(data: Mapping[str, object], key: str, where: str) -> object:
    if key not in data:
        msg = f"{where}: missing key {key!r}"
        raise ValueError(msg)
    return data[key]


def _mapping(value: object, where: str) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        msg = f"{where} must be a JSON object, not {type(value).__name__}"
        raise ValueError(msg)  # noqa: TRY004 -- bad data, not a caller's wrong type
    return value


def _text(value: object, where: str) -> str:
    if not isinstance(value, str):
        msg = f"{where} must be a string, not {type(value).__name__}"
        raise ValueError(msg)  # noqa: TRY004 -- bad data, not a caller's wrong type
    return value


def _texts(value: object, where: str) -> tuple[str, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        msg = f"{where} must be a list of strings, not {type(value).__name__}"
        raise ValueError(msg)  # noqa: TRY004 -- bad data, not a caller's wrong type
    return tuple(_text(item, f"{where}[{i}]") for i, item in enumerate(value))


def _seconds(value: object, where: str, *, infinite: bool = False) -> float:
    # bool is an int subclass, but true is no number of seconds.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        msg = f"{where} must be a number of seconds, not {value!r}"
        raise ValueError(msg)  # noqa: TRY004 -- bad data, not a caller's wrong type
    seconds = float(value)
    if math.isnan(seconds) or seconds < 0 or (math.isinf(seconds) and not infinite):
        rule = ">= 0 (inf for never)" if infinite else "finite and >= 0"
        msg = f"{where} must be {rule}, not {value!r}"
        raise ValueError(msg)
    return seconds


def _optional_seconds(value: object, where: str) -> float | None:
    return None if value is None else _seconds(value, where)


def _phase(value: object, where: str) -> PhaseSpan:
    data = _mapping(value, where)
    return PhaseSpan(
        name=_text(_field(data, "phase", where), f"{where}.phase"),
        started=_seconds(_field(data, "started", where), f"{where}.started"),
        duration=_seconds(_field(data, "duration", where), f"{where}.duration"),
        in_flight=_texts(_field(data, "in_flight", where), f"{where}.in_flight"),
    )


def _service(value: object, where: str) -> ServiceSpan:
    data = _mapping(value, where)
    error = data.get("error")
    return ServiceSpan(
        name=_text(_field(data, "name", where), f"{where}.name"),
        outcome=_text(_field(data, "outcome", where), f"{where}.outcome"),
        stop_requested_at=_optional_seconds(
            data.get("stop_requested_at"), f"{where}.stop_requested_at"
        ),
        finished_at=_optional_seconds(data.get("finished_at"), f"{where}.finished_at"),
        cancelled_in_flight=_texts(
            data.get("cancelled_in_flight", []), f"{where}.cancelled_in_flight"
        ),
        error=None if error is None else _text(error, f"{where}.error"),
    )


def _list(value: object, where: str) -> Sequence[object]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        msg = f"{where} must be a list, not {type(value).__name__}"
        raise ValueError(msg)  # noqa: TRY004 -- bad data, not a caller's wrong type
    return value


def budgets_from(
    data: Mapping[str, object], overrides: Mapping[str, object]
) -> Budgets:
    """The budgets: ``overrides`` (not None) win over the report's optional
    ``plan`` object."""
    plan = _mapping(data.get("plan", {}), "report.plan")
    values: dict[str, float | None] = {}
    for name in _BUDGET_NAMES:
        given = overrides.get(name)
        where = name if given is not None else f"report.plan.{name}"
        value = given if given is not None else plan.get(name)
        values[name] = None if value is None else _seconds(value, where, infinite=True)
    return Budgets(**values)


def read_report(
    data: Mapping[str, object], overrides: Mapping[str, object] | None = None
) -> TimelineInput:
    """Check a report's ``as_dict()`` (or its JSON read back) for drawing.

    Raises:
        ValueError: a key is missing or has the wrong type; the message names it.
    """
    data = _mapping(data, "report")
    phases = tuple(
        _phase(item, f"report.phases[{i}]")
        for i, item in enumerate(
            _list(_field(data, "phases", "report"), "report.phases")
        )
    )
    services = tuple(
        _service(item, f"report.services[{i}]")
        for i, item in enumerate(
            _list(_field(data, "services", "report"), "report.services")
        )
    )
    clean = _field(data, "clean", "report")
    if not isinstance(clean, bool):
        msg = f"report.clean must be true or false, not {clean!r}"
        raise ValueError(msg)  # noqa: TRY004 -- bad data, not a caller's wrong type
    exit_code = _field(data, "exit_code", "report")
    if isinstance(exit_code, bool) or not isinstance(exit_code, int):
        msg = f"report.exit_code must be an integer, not {exit_code!r}"
        raise ValueError(msg)  # noqa: TRY004 -- bad data, not a caller's wrong type
    signals = data.get("signals_received", 0)
    if isinstance(signals, bool) or not isinstance(signals, int) or signals < 0:
        msg = f"report.signals_received must be a count, not {signals!r}"
        raise ValueError(msg)
    budgets = budgets_from(data, overrides or {})
    return TimelineInput(
        trigger=_text(_field(data, "trigger", "report"), "report.trigger"),
        reason=_text(_field(data, "reason", "report"), "report.reason"),
        signals_received=signals,
        clean=clean,
        exit_code=exit_code,
        duration=_seconds(_field(data, "duration", "report"), "report.duration"),
        phases=phases,
        services=services,
        errors=_texts(data.get("errors", []), "report.errors"),
        deadlines=budgets.deadlines(phases),
    )
