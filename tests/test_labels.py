"""In-flight labels come from clients: printed, they are one line, escaped.

``printable_label`` is the one helper; the report's ``str()`` and the service
manager's ``STATUS=`` print through it, and ``as_dict()`` keeps the true label.
tests/test_hypercorn_clients.py sends a hostile path to a real server.
"""

from __future__ import annotations

import json

import pytest

from shutdown_scope import Phase, ShutdownReport
from shutdown_scope._labels import LABEL_LIMIT, printable_label
from shutdown_scope._report import PhaseRecord, ServiceRecord
from shutdown_scope._sd_notify import _in_flight, _verdict

FORGED = "shutdown clean (exit code 0) after 1.0 ms; trigger: finished"
HOSTILE = f"http: GET /x\n{FORGED}\x1b[2J"


@pytest.mark.parametrize(
    ("label", "shown"),
    [
        ("http: GET /plain", "http: GET /plain"),
        ("GET /x\nshutdown clean", r"GET /x\nshutdown clean"),
        ("a\rb\tc\x0bd\x0ce", r"a\rb\tc\x0bd\x0ce"),
        ("\x1b[31mred\x1b[0m", r"\x1b[31mred\x1b[0m"),
        ("\x00 and \x7f", r"\x00 and \x7f"),
        # C1 controls and Unicode line breaks end a line for some readers.
        ("nel\x85ls\u2028ps\u2029", r"nel\x85ls\u2028ps\u2029"),
        ("bidi \u202eevil\u202c", r"bidi \u202eevil\u202c"),
        ("lone \udcff surrogate", r"lone \udcff surrogate"),
        # A backslash is doubled: the text \n is not a newline.
        ("back\\slash \\n", r"back\\slash \\n"),
        ("caf\u00e9 \ufffd \u4e2d 'q' \"qq\"", "caf\u00e9 \ufffd \u4e2d 'q' \"qq\""),
        ("", ""),
    ],
)
def test_printable_label(label: str, shown: str) -> None:
    assert printable_label(label) == shown


def test_a_long_label_is_cut_with_a_marker() -> None:
    assert printable_label("x" * LABEL_LIMIT) == "x" * LABEL_LIMIT
    cut = printable_label("x" * (LABEL_LIMIT + 300))
    assert cut == "x" * LABEL_LIMIT + "…[+300 chars]"
    # Counted after escaping: what was left out of what would be shown.
    assert printable_label("\n" * 150, limit=10) == r"\n" * 5 + "…[+290 chars]"
    assert printable_label("\n" * 150, limit=None) == r"\n" * 150


def report_with(label: str) -> ShutdownReport:
    phase = PhaseRecord(phase=Phase.DRAINING, started=0, duration=1, in_flight=(label,))
    service = ServiceRecord(
        name="http",
        outcome="cancelled",
        stop_requested_at=0,
        finished_at=1,
        cancelled_in_flight=(label, label),
        error=None,
    )
    return ShutdownReport(
        trigger="request",
        reason=f"asked\n{FORGED}",
        signal=None,
        signals_received=0,
        phases=(phase,),
        services=(service,),
        errors=(),
        duration=1,
    )


def test_the_report_prints_labels_escaped_and_keeps_them_in_json() -> None:
    report = report_with(HOSTILE)
    lines = str(report).splitlines()
    assert len(lines) == 3, lines  # the verdict, one phase, one service
    assert not any(line.startswith(FORGED) or "\x1b" in line for line in lines)
    shown = printable_label(HOSTILE)
    assert f"in flight: {shown}" in lines[1]
    assert f"cancelled in flight: {shown} x2" in lines[2]
    assert rf"(asked\n{FORGED})" in lines[0]  # the reason too
    # JSON escapes by itself: the true label comes back.
    data = json.loads(json.dumps(report.as_dict()))
    assert data["phases"][0]["in_flight"] == [HOSTILE]
    assert data["services"][0]["cancelled_in_flight"] == [HOSTILE, HOSTILE]


def test_status_shows_labels_escaped() -> None:
    status = _in_flight((HOSTILE, "http: GET /ok"))
    assert "\n" not in status
    assert "\x1b" not in status
    assert status.startswith(r"2 in flight (http: GET /x\nshutdown clean")
    verdict = _verdict(report_with(HOSTILE))
    assert verdict.startswith(r"done: NOT clean: cancelled 2 in flight (http: GET /x\n")


def test_a_service_stopped_while_starting_is_named_in_the_report() -> None:
    service = ServiceRecord(
        name="http",
        outcome="not started",
        stop_requested_at=0,
        finished_at=0.5,
        cancelled_in_flight=(),
        error=None,
    )
    report = ShutdownReport(
        trigger="signal",
        reason="received SIGTERM",
        signal=15,
        signals_received=1,
        phases=(),
        services=(service,),
        errors=(),
        duration=0.5,
    )
    assert service.stopped_while_starting
    assert (report.clean, report.exit_code) == (False, 1)
    assert "service 'http': not started (stopped while starting)" in str(report)
    assert _verdict(report) == "done: NOT clean: http stopped while starting"
    # A start that failed on its own (its error is reported) is not this.
    failed = ServiceRecord(
        name="http",
        outcome="not started",
        stop_requested_at=None,
        finished_at=None,
        cancelled_in_flight=(),
        error="OSError('in use')",
    )
    assert not failed.stopped_while_starting
