"""shutdown_scope.timeline: a ShutdownReport drawn as SVG, from a real scope and
from its JSON read back; every label escaped."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import anyio
import pytest
from _services import NO_SIGNALS
from anyio.abc import TaskStatus

from shutdown_scope import Phase, ShutdownReport, ShutdownToken, graceful_scope
from shutdown_scope._timeline_canvas import LEFT, PLOT
from shutdown_scope.timeline import main, render_svg

SVG = "{http://www.w3.org/2000/svg}"
# Budgets of the scope below: the drain deadline at +0.25 s cuts GET /slow.
BUDGETS: dict[str, Any] = {
    "announce_delay": 0.05,
    "drain_timeout": 0.2,
    "cancel_timeout": 0.1,
}
HOSTILE = [
    "GET /<script>alert(1)</script>",
    "GET /a&b&amp;c]]>",
    "GET /\"quoted\" 'single'",
    "GET /ctl\x00\x07\x1b[31m\x7f\n\r\t\u2028\ud800\ufffe",
    "GET /" + "x" * 100_000,
]


def parse(svg: str) -> ET.Element:
    svg.encode("utf-8")  # a lone surrogate left in would fail here
    return ET.fromstring(svg)  # noqa: S314 -- our own output, parsed to check it


def by_class(root: ET.Element, cls: str) -> list[ET.Element]:
    return [e for e in root.iter() if cls in (e.get("class") or "").split()]


def title(element: ET.Element) -> str:
    found = element.find(f"{SVG}title")
    assert found is not None
    return found.text or ""


def all_text(root: ET.Element) -> str:
    return "\n".join("".join(e.itertext()) for e in root)


async def serve_requests(
    token: ShutdownToken,
    labels: list[str],
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """One quick request per label and a slow one the drain deadline cuts."""

    async def request(label: str, seconds: float) -> None:
        with token.in_flight(label):
            await anyio.sleep(seconds)

    async with anyio.create_task_group() as tg:
        for label in labels:
            tg.start_soon(request, label, 0.1)
        tg.start_soon(request, "GET /slow", math.inf)
        task_status.started()
        await anyio.sleep_forever()


async def real_report(labels: list[str]) -> ShutdownReport:
    async with graceful_scope(**NO_SIGNALS, **BUDGETS) as scope:
        await scope.start(serve_requests, labels, name="http")
        await anyio.sleep(0.01)
        scope.request_shutdown("test")
    return scope.report


@pytest.mark.anyio
async def test_real_scope_bands_in_proportion_and_deadlines() -> None:
    report = await real_report(["GET /a", "GET /b"])
    assert [p.phase for p in report.phases] == [
        Phase.STOPPING,
        Phase.DRAINING,
        Phase.CANCELLING,
    ]
    root = parse(render_svg(report, **BUDGETS, grace_period=30))
    bands = by_class(root, "phase")
    assert len(bands) == len(report.phases)
    # One scale for every band, start and deadline: pixels per second.
    per_second = PLOT / float(root.get("data-axis-end", "nan"))
    for band, record in zip(bands, report.phases, strict=True):
        assert float(band.get("width", "")) == pytest.approx(
            record.duration * per_second, abs=0.01
        )
        assert float(band.get("x", "")) == pytest.approx(
            LEFT + record.started * per_second, abs=0.01
        )
        assert record.phase.name in title(band)
    drain = report.phase(Phase.DRAINING)
    assert drain is not None
    # Real time on asyncio, on a loaded machine: its exact length is the
    # virtual-time test's job.
    assert drain.duration > 0
    lines = {
        title(line).rsplit(" +", 1)[0]: line for line in by_class(root, "deadline")
    }
    assert set(lines) == {"announce ends", "drain deadline", "cancel deadline"}
    cancelling = report.phase(Phase.CANCELLING)
    assert cancelling is not None
    expected = {
        "announce ends": 0.05,
        "drain deadline": 0.25,
        "cancel deadline": cancelling.started + 0.1,
    }
    for name, at in expected.items():
        assert float(lines[name].get("x1", "")) == pytest.approx(
            LEFT + at * per_second, abs=0.01
        )
    # 30 s is far past this 0.25 s shutdown: listed under the axis, not drawn.
    assert "SIGKILL (grace period) at +30 s: past the end" in all_text(root)
    (service,) = by_class(root, "service")
    assert service.get("data-outcome") == "cancelled"
    assert "cancelled in flight: http: GET /slow" in title(service)


@pytest.mark.anyio
async def test_virtual_time_exact_widths(mock_clock: object) -> None:
    report = await real_report(["GET /a"])
    root = parse(render_svg(report, **BUDGETS))
    per_second = PLOT / float(root.get("data-axis-end", "nan"))
    widths = [float(b.get("width", "")) for b in by_class(root, "phase")]
    # Virtual time: STOPPING is the announce delay, DRAINING the drain timeout
    # to the microsecond.
    assert widths[:2] == [
        pytest.approx(0.05 * per_second, abs=0.006),
        pytest.approx(0.2 * per_second, abs=0.006),
    ]
    assert widths[1] / widths[0] == pytest.approx(4, rel=1e-3)
    counts = [int(g.get("data-count", "")) for g in by_class(root, "in-flight")]
    # At STOPPING and at DRAINING (+0.05 s): GET /a and GET /slow (GET /a is
    # answered at +0.09 s); at CANCELLING: GET /slow; at the end: nothing.
    assert counts == [2, 2, 1, 0]


@pytest.mark.anyio
async def test_hostile_labels_are_escaped() -> None:
    report = await real_report(HOSTILE)
    svg = render_svg(report, **BUDGETS)
    root = parse(svg)
    assert not [e for e in root.iter() if e.tag != f"{SVG}svg" and "script" in e.tag]
    for raw in ("\x00", "\x07", "\x1b", "\x7f", "\u2028", "\ufffe"):
        assert raw not in svg
    text = all_text(root)
    assert "GET /<script>alert(1)</script>" in text  # shown as text, not markup
    assert "<script>" not in svg
    assert "GET /a&b&amp;c]]>" in text
    assert "\\x00\\x07\\x1b[31m\\x7f\\n\\r\\t\\u2028\\ud800\\ufffe" in text
    # 100 000 characters of path: cut in every place it is shown.
    assert len(svg) < 40_000
    assert "GET /" + "x" * 40 in text
    assert "x" * 200 not in svg


def hostile_dict() -> dict[str, Any]:
    quote = '"><script>alert(1)</script><x a="'
    return {
        "trigger": "signal",
        "reason": "received SIGTERM\x1b]0;owned\x07",
        "clean": False,
        "exit_code": 1,
        "duration": 1.5,
        "phases": [
            {"phase": "STOPPING", "started": 0, "duration": 0.5, "in_flight": []},
            {"phase": quote, "started": 0.5, "duration": 1.0, "in_flight": [quote]},
        ],
        "services": [
            {
                "name": quote,
                "outcome": quote,
                "stop_requested_at": 0.0,
                "finished_at": 1.5,
                "cancelled_in_flight": [quote],
                "error": f"RuntimeError({quote!r})",
            },
            {  # ends early: its outcome is written right of its mark
                "name": f"early café 日本 {quote}",
                "outcome": quote,
                "stop_requested_at": 0.0,
                "finished_at": 0.1,
                "cancelled_in_flight": [quote],
                "error": None,
            },
        ],
        "errors": [f"RuntimeError: {quote}\nsecond line"],
    }


def test_hostile_names_outcomes_and_errors_from_json() -> None:
    root = parse(render_svg(hostile_dict()))
    assert {e.tag for e in root.iter()} <= {
        f"{SVG}{tag}"
        for tag in ("svg", "title", "style", "rect", "text", "g", "line", "circle")
    }
    services = by_class(root, "service")
    assert len(services) == 2
    for service in services:
        assert service.get("data-outcome") == '"><script>alert(1)</script><x a="'
    outcomes = [e.text or "" for e in by_class(root, "outcome")]
    assert len(outcomes) == 2
    assert all(text.startswith('"><script>alert(1)</script>') for text in outcomes)
    assert "RuntimeError: " in all_text(root)
    assert "\x1b" not in ET.tostring(root, encoding="unicode")


def test_escalated_cancel_deadline_counts_from_cancelling() -> None:
    report = {
        **hostile_dict(),
        "reason": "received SIGTERM",
        "phases": [
            {"phase": "STOPPING", "started": 0, "duration": 0, "in_flight": ["a"]},
            {"phase": "DRAINING", "started": 0, "duration": 0.4, "in_flight": ["a"]},
            {"phase": "CANCELLING", "started": 0.4, "duration": 0.1, "in_flight": []},
        ],
        "duration": 0.5,
        # As a JSON log might carry it; the keyword argument wins.
        "plan": {"drain_timeout": 10, "cancel_timeout": 0.3},
    }
    root = parse(render_svg(report, drain_timeout=20))
    lines = [title(line) for line in by_class(root, "deadline")]
    # A second signal at +0.4 s: cancel deadline 0.3 s later, not at 10.3 s.
    assert lines == ["cancel deadline +700 ms"]
    assert "drain deadline at +20 s: past the end of this axis" in all_text(root)


def test_finished_scope_without_phases() -> None:
    report = {
        **hostile_dict(),
        "trigger": "finished",
        "clean": True,
        "exit_code": 0,
        "duration": 0,
        "phases": [],
        "services": [
            {
                "name": "job",
                "outcome": "returned",
                "stop_requested_at": None,
                "finished_at": None,
                "cancelled_in_flight": [],
                "error": None,
            }
        ],
        "errors": [],
    }
    root = parse(render_svg(report))
    assert by_class(root, "phase") == []
    assert "no shutdown phases" in all_text(root)
    assert "returned before the shutdown" in all_text(root)


def test_times_past_the_reported_duration_stay_on_the_axis() -> None:
    data = hostile_dict()
    data["phases"][1]["duration"] = 30.0  # ends long after "duration": 1.5
    data["services"][0]["finished_at"] = 40.0
    root = parse(render_svg(data))
    per_second = PLOT / float(root.get("data-axis-end", "nan"))
    for band in by_class(root, "phase"):
        assert float(band.get("x", "")) + float(band.get("width", "")) <= LEFT + PLOT
    assert float(root.get("data-axis-end", "")) >= 40.0
    assert per_second > 0
    data["phases"][1] = {**data["phases"][1], "started": 1e308, "duration": 1e308}
    with pytest.raises(ValueError, match=r"^report: its times are too large to draw$"):
        render_svg(data)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"phases": None}, "report.phases must be a list, not NoneType"),
        ({"duration": "1"}, "report.duration must be a number of seconds, not '1'"),
        ({"duration": float("nan")}, "report.duration must be finite and >= 0"),
        ({"duration": -1}, "report.duration must be finite and >= 0"),
        ({"duration": True}, "report.duration must be a number of seconds"),
        ({"clean": "yes"}, "report.clean must be true or false"),
        ({"exit_code": 1.0}, "report.exit_code must be an integer"),
        ({"reason": None}, "report.reason must be a string"),
        ({"phases": [{"phase": "X"}]}, "report.phases[0]: missing key 'started'"),
        ({"phases": [[]]}, "report.phases[0] must be a JSON object, not list"),
        (
            {"services": [{"name": "a", "outcome": "x", "finished_at": "soon"}]},
            "report.services[0].finished_at must be a number of seconds",
        ),
        (
            {"services": [{"name": "a", "outcome": "x", "cancelled_in_flight": "ab"}]},
            "report.services[0].cancelled_in_flight must be a list of strings",
        ),
        ({"plan": {"drain_timeout": -2}}, "report.plan.drain_timeout must be >= 0"),
        ({"plan": []}, "report.plan must be a JSON object"),
    ],
)
def test_bad_report_dict_names_the_field(
    change: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=r"^" + re.escape(message)):
        render_svg({**hostile_dict(), **change})


def test_missing_key_and_bad_arguments() -> None:
    data = hostile_dict()
    del data["services"]
    with pytest.raises(ValueError, match=r"^report: missing key 'services'$"):
        render_svg(data)
    with pytest.raises(TypeError, match="ShutdownReport or its as_dict"):
        render_svg("{}")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="drain_timeout must be a number"):
        render_svg(hostile_dict(), drain_timeout="20")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="cancel_timeout must be a number"):
        render_svg(hostile_dict(), cancel_timeout=True)
    with pytest.raises(ValueError, match="announce_delay must be >= 0"):
        render_svg(hostile_dict(), announce_delay=-1)
    with pytest.raises(ValueError, match="grace_period must be > 0"):
        render_svg(hostile_dict(), grace_period=0)
    with pytest.raises(ValueError, match="drain_timeout must be >= 0"):
        render_svg(hostile_dict(), drain_timeout=math.nan)


@pytest.mark.anyio
async def test_json_file_through_the_command(tmp_path: Path) -> None:
    report = await real_report(["GET /a"])
    path = tmp_path / "report.json"
    path.write_text(json.dumps({**report.as_dict(), "plan": BUDGETS}))
    out = tmp_path / "out.svg"
    assert main([str(path), "-o", str(out), "--grace-period", "0.3"]) == 0
    svg = out.read_text(encoding="utf-8")
    assert svg == render_svg(report, **BUDGETS, grace_period=0.3)
    names = [
        title(line).rsplit(" +", 1)[0] for line in by_class(parse(svg), "deadline")
    ]
    assert "SIGKILL (grace period)" in names


@pytest.mark.subprocess
def test_command_writes_stdout_and_rejects_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    path.write_text(json.dumps(hostile_dict()), encoding="utf-8")
    command = [sys.executable, "-m", "shutdown_scope.timeline"]
    # An ASCII locale: the SVG on stdout is UTF-8 all the same.
    c_locale = {
        k: v for k, v in os.environ.items() if not k.startswith(("LC_", "PYTHONIO"))
    }
    c_locale |= {"LANG": "C", "LC_ALL": "C", "PYTHONUTF8": "0"}
    raw = subprocess.run(
        [*command, str(path)], capture_output=True, check=False, env=c_locale
    )
    assert raw.returncode == 0, raw.stderr
    assert raw.stdout.decode("utf-8") == render_svg(hostile_dict())
    bad = tmp_path / "bad.json"
    cases = {
        "{": "Expecting property name",
        "[]": "the report must be a JSON object, not list",
        '{"trigger": "signal"}': "report: missing key 'phases'",
    }
    for text, message in cases.items():
        bad.write_text(text, encoding="utf-8")
        done = subprocess.run(
            [*command, str(bad)], capture_output=True, text=True, check=False
        )
        assert done.returncode == 2
        assert done.stdout == ""
        assert message in done.stderr.splitlines()[-1]
    done = subprocess.run(
        [*command, str(tmp_path / "missing.json")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "No such file or directory" in done.stderr.splitlines()[-1]
    done = subprocess.run(
        [*command, "-", "--drain-timeout", "2"],
        input=json.dumps(hostile_dict()),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0
    assert "drain deadline" in done.stdout
