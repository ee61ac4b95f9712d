"""A ``ShutdownReport`` back from the JSON of ``as_dict()``, for another process."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any, cast, get_args

from shutdown_scope import (
    Phase,
    PhaseRecord,
    ServiceOutcome,
    ServiceRecord,
    ShutdownReport,
    TriggerKind,
)

__all__ = ["ReportedError", "read_report", "report_from_dict"]


class ReportedError(Exception):
    """An error another process's report named; its text is that one line
    (``"ValueError: boom"``), the exception itself stayed in that process."""


def _get(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = data[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        msg = f"{key!r} is {value!r}"
        raise TypeError(msg)
    return value


def _seconds(data: Mapping[str, Any], key: str) -> float:
    value = float(_get(data, key, (int, float)))
    if math.isnan(value):
        msg = f"{key!r} is NaN"
        raise ValueError(msg)
    return value


def _optional_seconds(data: Mapping[str, Any], key: str) -> float | None:
    return None if data[key] is None else _seconds(data, key)


def _labels(data: Mapping[str, Any], key: str) -> tuple[str, ...]:
    labels = _get(data, key, list)
    if not all(isinstance(label, str) for label in labels):
        msg = f"{key!r} holds a label that is not a string"
        raise TypeError(msg)
    return tuple(labels)


def _choice(data: Mapping[str, Any], key: str, literal: object) -> Any:
    value = data[key]
    if value not in get_args(literal):
        msg = f"{key!r} is {value!r}"
        raise ValueError(msg)
    return value


def _phase(data: Mapping[str, Any]) -> PhaseRecord:
    name = _get(data, "phase", str)
    if name not in Phase.__members__:
        msg = f"'phase' is {name!r}"
        raise ValueError(msg)
    return PhaseRecord(
        phase=Phase[name],
        started=_seconds(data, "started"),
        duration=_seconds(data, "duration"),
        in_flight=_labels(data, "in_flight"),
    )


def _service(data: Mapping[str, Any]) -> ServiceRecord:
    error = data["error"]
    if error is not None and not isinstance(error, str):
        msg = f"'error' is {error!r}"
        raise TypeError(msg)
    return ServiceRecord(
        name=_get(data, "name", str),
        outcome=cast("ServiceOutcome", _choice(data, "outcome", ServiceOutcome)),
        stop_requested_at=_optional_seconds(data, "stop_requested_at"),
        finished_at=_optional_seconds(data, "finished_at"),
        cancelled_in_flight=_labels(data, "cancelled_in_flight"),
        error=error,
    )


def report_from_dict(data: Mapping[str, Any]) -> ShutdownReport:
    """The report whose ``as_dict()`` gave ``data``.

    Errors come back as ``ReportedError`` with their one-line text; ``clean``
    and ``exit_code`` are computed again from the rest, as for any report.

    Raises:
        ValueError: ``data`` is not the dict of a report (the message says why).
    """
    try:
        signal = None if data["signal"] is None else _get(data, "signal", int)
        errors = _labels(data, "errors")
        return ShutdownReport(
            trigger=cast("TriggerKind", _choice(data, "trigger", TriggerKind)),
            reason=_get(data, "reason", str),
            signal=signal,
            signals_received=_get(data, "signals_received", int),
            phases=tuple(_phase(p) for p in _get(data, "phases", list)),
            services=tuple(_service(s) for s in _get(data, "services", list)),
            errors=tuple(ReportedError(text) for text in errors),
            duration=_seconds(data, "duration"),
        )
    except (KeyError, TypeError, ValueError) as error:
        what = f"missing {error}" if isinstance(error, KeyError) else str(error)
        msg = f"not the dict of a ShutdownReport: {what}"
        raise ValueError(msg) from None


def read_report(path: str | PathLike[str]) -> ShutdownReport:
    """The report a process wrote to ``path`` (``SHUTDOWN_SCOPE_REPORT_FILE``).

    Raises:
        OSError: the file cannot be read.
        ValueError: it does not hold a report's JSON.
    """
    text = Path(path).read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        msg = f"{path}: not JSON: {error}"
        raise ValueError(msg) from None
    if not isinstance(data, dict):
        msg = f"{path}: not the dict of a ShutdownReport"
        raise ValueError(msg)  # noqa: TRY004 -- bad content, not a caller's type
    return report_from_dict(data)
