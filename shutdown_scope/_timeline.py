"""A ShutdownReport drawn as an SVG timeline, with the standard library alone.

Rows, top to bottom, on one time axis from the trigger to the scope's end: the
phases as bands (width in proportion to duration); what was in flight at each
phase change (the report samples it there, so it is drawn as one stem per
sample, not as a guessed curve); each service from its stop request to its
end, marked with its outcome; the deadlines as dashed lines across every row.

Every text that comes from the report (labels are often a client's request
path) is shown through ``printable_label`` (one line, non-printables escaped,
cut) and then XML-escaped, so no report can break the document or inject
markup.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Final
from xml.sax.saxutils import escape, quoteattr

from ._timeline_canvas import (
    CHAR,
    LEFT,
    PLOT,
    RIGHT,
    WIDTH,
    Canvas,
    counted_labels,
    duration_text,
    fit_text,
    nice_step,
    shown_text,
)
from ._timeline_input import (
    Deadline,
    PhaseSpan,
    ServiceSpan,
    TimelineInput,
    read_report,
)

__all__ = ["timeline_svg"]

TOP: Final = 100  # where the axis' rows begin, below the title and deadline names
PHASE_ROW: Final = 36
FLIGHT_ROW: Final = 90
SERVICE_ROW: Final = 36
MARK: Final = 3  # px: the mark of a phase too short to see as a band
# Deadlines up to this many times the shutdown's length stretch the axis to
# show them; later ones are listed below it, so a 20 ms stop is not a sliver.
STRETCH: Final = 2.5

PHASE_COLOURS: Final = {
    "STOPPING": "#f4c95d",
    "DRAINING": "#6aaed6",
    "CANCELLING": "#e8875b",
    "EXITING": "#a4161a",
}
OUTCOME_COLOURS: Final = {
    "returned": "#2a9d8f",
    "stopped": "#2a9d8f",
    "cancelled": "#e8875b",
    "failed": "#a4161a",
    "abandoned": "#6a040f",
    "not started": "#8d99ae",
}
OTHER: Final = "#adb5bd"


def _axis_end(report: TimelineInput) -> float:
    """Seconds shown: the whole shutdown, whatever a hand-made report claims,
    and the deadlines that fall near it.

    Raises:
        ValueError: the times are too large to draw.
    """
    service_times = (
        t
        for s in report.services
        for t in (s.stop_requested_at, s.finished_at)
        if t is not None
    )
    phase_ends = (p.started + p.duration for p in report.phases)
    end = max([report.duration, *phase_ends, *service_times])
    near = [d.at for d in report.deadlines if d.at <= max(end, 1e-9) * STRETCH]
    end = max([end, *near]) * 1.04  # room for the last deadline's line
    if not math.isfinite(end):
        msg = "report: its times are too large to draw"
        raise ValueError(msg)
    return end or 1.0


def _draw_title(canvas: Canvas, report: TimelineInput) -> None:
    verdict = "clean" if report.clean else "NOT clean"
    title = (
        f"shutdown {verdict} (exit code {report.exit_code}) after"
        f" {duration_text(report.duration)}"
    )
    canvas.text(16, 24, escape(title), cls="title")
    cause = f"trigger: {shown_text(report.trigger)} ({shown_text(report.reason)})"
    if report.signals_received > 1:
        cause += f"; {report.signals_received} signals received"
    canvas.text(16, 44, escape(fit_text(cause, WIDTH - 32)), cls="subtitle")


def _draw_phases(canvas: Canvas, phases: tuple[PhaseSpan, ...], top: float) -> None:
    canvas.text(16, top + PHASE_ROW / 2 + 4, "phases", cls="row")
    for span in phases:
        x, width = canvas.x(span.started), PLOT * span.duration / canvas.axis_end
        colour = PHASE_COLOURS.get(span.name, OTHER)
        name = shown_text(span.name)
        tip = escape(
            f"{name}: from {duration_text(span.started, sign='+')} for"
            f" {duration_text(span.duration)}; in flight at its start:"
            f" {counted_labels(span.in_flight)}"
        )
        canvas.add(
            f'<rect class="phase" x="{x:.2f}" y="{top:.2f}" width="{width:.2f}"'
            f' height="{PHASE_ROW}" fill="{colour}">'
            f"<title>{tip}</title></rect>"
        )
        if width < MARK:
            # Too short to see at this scale (STOPPING often lasts microseconds):
            # a mark where it began, in its colour, outside the proportional band.
            canvas.add(
                f'<rect class="phase-mark" x="{x:.2f}" y="{top - 4:.2f}"'
                f' width="{MARK}" height="{PHASE_ROW + 8}" fill="{colour}">'
                f"<title>{tip}</title></rect>"
            )
        if width > CHAR * (len(name) + 1):
            canvas.text(x + 4, top + PHASE_ROW / 2 + 4, escape(name), cls="band")


def _flight_samples(report: TimelineInput) -> list[tuple[float, tuple[str, ...]]]:
    samples = [(p.started, p.in_flight) for p in report.phases]
    if report.phases:
        # The scope waits for every task before it ends: nothing is left.
        samples.append((report.duration, ()))
    return samples


def _draw_in_flight(canvas: Canvas, report: TimelineInput, top: float) -> None:
    canvas.text(16, top + 14, "in flight", cls="row")
    canvas.text(16, top + 30, "at each phase change", cls="note")
    samples = _flight_samples(report)
    base = top + FLIGHT_ROW - 8
    canvas.add(
        f'<line class="baseline" x1="{LEFT}" y1="{base:.2f}" x2="{RIGHT}"'
        f' y2="{base:.2f}"/>'
    )
    most = max((len(labels) for _, labels in samples), default=0) or 1
    drawn: tuple[float, int] | None = None
    for at, labels in samples:
        x = canvas.x(at)
        if drawn is not None and x - drawn[0] < 1 and len(labels) == drawn[1]:
            continue  # the same count at the same pixel: one stem says it
        y = base - (FLIGHT_ROW - 30) * len(labels) / most
        tip = (
            f"{duration_text(at, sign='+')}: {len(labels)} in flight:"
            f" {counted_labels(labels)}"
        )
        canvas.add(
            f'<g class="in-flight" data-count="{len(labels)}">'
            f"<title>{escape(tip)}</title>"
            f'<line x1="{x:.2f}" y1="{base:.2f}" x2="{x:.2f}" y2="{y:.2f}"/>'
            f'<circle cx="{x:.2f}" cy="{y:.2f}" r="3.5"/></g>'
        )
        # Stems a few pixels apart: the second number goes higher, still readable.
        lift = 10 if drawn is not None and x - drawn[0] < CHAR * 3 else 0
        canvas.text(x, y - 6 - lift, str(len(labels)), cls="count", anchor="middle")
        drawn = (x, len(labels))


def _draw_service(canvas: Canvas, service: ServiceSpan, top: float) -> None:
    middle = top + SERVICE_ROW / 2
    name = shown_text(service.name)
    canvas.text(
        16, middle + 4, escape(fit_text(f"service {name}", LEFT - 24)), cls="row"
    )
    colour = OUTCOME_COLOURS.get(service.outcome, OTHER)
    outcome = shown_text(service.outcome)
    what = outcome
    if service.cancelled_in_flight:
        what += f"; cancelled in flight: {counted_labels(service.cancelled_in_flight)}"
    if service.error:
        what += f"; error: {shown_text(service.error)}"
    finished = service.finished_at
    if finished is None:
        # Ended before the trigger, or (no report says so today) never.
        when = " before the shutdown" if service.stop_requested_at is None else ""
        canvas.text(LEFT, middle + 4, escape(fit_text(what + when, PLOT)), cls="note")
        return
    start = finished if service.stop_requested_at is None else service.stop_requested_at
    x1, x2 = canvas.x(start), canvas.x(finished)
    requested = (
        "-" if service.stop_requested_at is None else duration_text(start, sign="+")
    )
    tip = (
        f"service {name}: {what}; stop requested at {requested},"
        f" finished at {duration_text(finished, sign='+')}"
    )
    canvas.add(
        f'<g class="service" data-outcome={quoteattr(outcome)}>'
        f"<title>{escape(tip)}</title>"
        f'<rect x="{x1:.2f}" y="{middle - 3:.2f}" width="{x2 - x1:.2f}" height="6"'
        f' fill="{colour}" opacity="0.45"/>'
        f'<circle cx="{x2:.2f}" cy="{middle:.2f}" r="5" fill="{colour}"/></g>'
    )
    room_right = WIDTH - 8 - x2
    if room_right >= (x2 - LEFT) or room_right > CHAR * 24:
        shown = escape(fit_text(what, room_right - 9))
        canvas.text(x2 + 9, middle + 4, shown, cls="outcome")
    else:
        shown = escape(fit_text(what, x2 + 5 - LEFT))
        # Above the bar, ending at the mark, so the bar stays visible.
        canvas.text(x2 + 5, middle - 7, shown, cls="outcome", anchor="end")


def _draw_axis(canvas: Canvas, y: float) -> None:
    canvas.add(f'<line class="axis" x1="{LEFT}" y1="{y}" x2="{RIGHT}" y2="{y}"/>')
    step = nice_step(canvas.axis_end)
    n = 0
    while n * step <= canvas.axis_end * (1 + 1e-9):
        t = n * step
        x = canvas.x(t)
        canvas.add(
            f'<line class="tick" x1="{x:.2f}" y1="{y}" x2="{x:.2f}" y2="{y + 5}"/>'
        )
        label = f"{t:.4g} s" if canvas.axis_end >= 1 else f"{t * 1000:.4g} ms"
        canvas.text(x, y + 18, escape(label), cls="tick", anchor="middle")
        n += 1
    canvas.text(RIGHT, y + 34, "time since the trigger", cls="note", anchor="end")


def _draw_deadlines(
    canvas: Canvas, deadlines: tuple[Deadline, ...], bottom: float
) -> list[Deadline]:
    """Draw the deadlines on the axis; return those past its end."""
    later: list[Deadline] = []
    shown = sorted(
        (d for d in deadlines if d.at <= canvas.axis_end), key=lambda d: d.at
    )
    for i, deadline in enumerate(shown):
        x = canvas.x(deadline.at)
        label = f"{deadline.name} {duration_text(deadline.at, sign='+')}"
        kill = deadline.name.startswith("SIGKILL")
        canvas.add(
            f'<line class="deadline{" kill" if kill else ""}" x1="{x:.2f}"'
            f' y1="{TOP - 30 + 13 * (i % 2):.2f}" x2="{x:.2f}" y2="{bottom:.2f}">'
            f"<title>{escape(label)}</title></line>"
        )
        anchor = "end" if x > RIGHT - CHAR * len(label) else "start"
        dx = -4 if anchor == "end" else 4
        y = TOP - 22 + 13 * (i % 2)
        canvas.text(x + dx, y, escape(label), cls="deadline-name", anchor=anchor)
    later.extend(d for d in deadlines if d.at > canvas.axis_end)
    return later


_STYLE: Final = """
text { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; font-size: 12px;
  fill: #212529; }
.title { font-size: 15px; font-weight: 600; }
.subtitle, .note, .tick { fill: #495057; }
.row { font-weight: 600; }
.band { fill: #1b1b1b; }
.count { font-size: 11px; text-anchor: middle; }
.deadline-name { font-size: 11px; fill: #6c2b2b; }
.axis, .tick, .baseline { stroke: #868e96; stroke-width: 1; }
.in-flight line { stroke: #1864ab; stroke-width: 2; }
.in-flight circle { fill: #1864ab; }
.deadline { stroke: #6c2b2b; stroke-width: 1.5; stroke-dasharray: 6 4; }
.deadline.kill { stroke: #c92a2a; stroke-dasharray: 2 3; }
"""


def _legend(canvas: Canvas, y: float) -> None:
    x = 16.0
    for name, colour in PHASE_COLOURS.items():
        canvas.add(
            f'<rect class="legend" x="{x:.2f}" y="{y - 10}" width="12" height="12"'
            f' fill="{colour}"/>'
        )
        canvas.text(x + 16, y, name, cls="note")
        x += 16 + CHAR * len(name) + 18


def timeline_svg(
    report: Mapping[str, object], budgets: Mapping[str, object] | None = None
) -> str:
    """The SVG document (UTF-8 text) drawing ``report``, a ``ShutdownReport``'s
    ``as_dict()`` or its JSON read back.

    Args:
        report: the dict; an optional ``plan`` object in it gives the budgets.
        budgets: ``announce_delay``, ``drain_timeout``, ``cancel_timeout``,
            ``grace_period`` in seconds, for the deadline lines; those given
            win over the report's ``plan``.

    Raises:
        ValueError: the report lacks a field or has one of the wrong type.
    """
    data = read_report(report, budgets)
    canvas = Canvas(_axis_end(data))
    _draw_title(canvas, data)
    y = float(TOP)
    if data.phases:
        _draw_phases(canvas, data.phases, y)
    else:
        note = "no shutdown phases: the body and every service returned on their own"
        canvas.text(LEFT, y + PHASE_ROW / 2 + 4, escape(note), cls="note")
    y += PHASE_ROW + 10
    _draw_in_flight(canvas, data, y)
    y += FLIGHT_ROW + 6
    for service in data.services:
        _draw_service(canvas, service, y)
        y += SERVICE_ROW
    later = _draw_deadlines(canvas, data.deadlines, y + 2)
    _draw_axis(canvas, y + 2)
    y += 56
    notes = [
        f"{d.name} at {duration_text(d.at, sign='+')}: past the end of this axis"
        for d in later
    ]
    notes.extend(f"error: {shown_text(error)}" for error in data.errors)
    for note in notes:
        canvas.text(16, y, escape(fit_text(note, WIDTH - 32)), cls="note")
        y += 18
    _legend(canvas, y + 4)
    height = math.ceil(y + 20)
    head = (
        '<svg xmlns="http://www.w3.org/2000/svg" role="img"'
        f' width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}"'
        # The scale, for programs that read the drawing: PLOT px = this many s.
        f' data-axis-end="{canvas.axis_end!r}">'
        f"<title>{escape(_summary(data))}</title>"
        f"<style>{_STYLE}</style>"
        f'<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>'
    )
    return "\n".join(
        ['<?xml version="1.0" encoding="UTF-8"?>', head, *canvas.parts, "</svg>", ""]
    )


def _summary(data: TimelineInput) -> str:
    verdict = "clean" if data.clean else "not clean"
    phases = ", ".join(
        f"{shown_text(p.name)} {duration_text(p.duration)}" for p in data.phases
    )
    return f"Shutdown timeline: {verdict}, {duration_text(data.duration)}; {phases}"
