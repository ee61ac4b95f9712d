"""The hard exit in real processes: escalation and ``hard_exit=False``.

``hard_exit=False`` turns off the watchdog's deadline, not a person's last word:
a third signal, or a second one once CANCELLING has begun, still ends the
process at once, with 128 + the signal that began the shutdown. Each test runs
``tests/_children.py serve``, acts on the markers the child itself prints and
asserts on the exit code and the report, not on log lines.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from _spawn import Child

CHILDREN = Path(__file__).with_name("_children.py")
# graceful_scope's default signal_debounce, which the children use.
DEBOUNCE = 0.2

pytestmark = pytest.mark.subprocess
# What these tests exercise (the signal handler, the watchdog thread) is the
# same on both backends; to keep the suite quick, only the first case runs on
# both and the others take turns.


def serve(backend: str, options: str) -> Child:
    """Start the ``serve`` child; return once its job is in flight."""
    child = Child(str(CHILDREN), "serve", "--backend", backend, *options.split())
    child.wait_for("ready pid=")
    return child


def past_debounce() -> None:
    """A lower bound on the gap to the next signal (sent after the child showed
    it handled the previous one), so the next one counts."""
    time.sleep(DEBOUNCE + 0.1)


def report_of(child: Child) -> dict[str, Any]:
    line = child.lines[child.index("REPORT ")]
    report: dict[str, Any] = json.loads(line.removeprefix("REPORT "))
    return report


# The third signal: the loop is blocked, so the second signal cannot escalate
# (the phase stays before CANCELLING): only the count of three ends it. The exit
# code is that of the first signal, SIGTERM, not of the last, SIGINT.
THIRD_SIGNAL = (
    "--behaviour blocked --drain 20 --cancel 20",
    "blocking the loop",
    (signal.SIGINT, signal.SIGINT),
)
# A second signal in CANCELLING: without the watchdog's deadline a stubborn
# service would keep the process for its whole minute; the operator's second
# signal ends it.
SECOND_SIGNAL_IN_CANCELLING = (
    "--behaviour stubborn --work 60 --drain 0.3 --cancel 20",
    "ignoring cancel",
    (signal.SIGTERM,),
)


@pytest.mark.parametrize(
    ("backend", "case"),
    [
        pytest.param("asyncio", THIRD_SIGNAL, id="third-signal-asyncio"),
        pytest.param("trio", THIRD_SIGNAL, id="third-signal-trio"),
        pytest.param(
            "asyncio",
            SECOND_SIGNAL_IN_CANCELLING,
            id="second-signal-in-cancelling-asyncio",
        ),
    ],
)
def test_the_operators_last_signal_exits_hard_even_with_hard_exit_false(
    backend: str, case: tuple[str, str, tuple[signal.Signals, ...]]
) -> None:
    options, marker, later = case
    with serve(backend, f"--no-hard-exit {options}") as child:
        child.send(signal.SIGTERM)
        child.wait_for(marker)
        for signum in later:
            past_debounce()
            child.send(signum)
        assert child.finish() == 128 + signal.SIGTERM, child.output
    assert "REPORT " not in child.output


@pytest.mark.parametrize("backend", ["trio"])
def test_with_hard_exit_false_the_spent_budget_does_not_end_the_process(
    backend: str,
) -> None:
    # The budget (0.2 s) is spent while the worker's cleanup ignores its
    # cancellation for 1 s more: the scope waits for it and reports it.
    options = "--no-hard-exit --behaviour stubborn --work 1 --drain 0.1 --cancel 0.1"
    with serve(backend, options) as child:
        child.send(signal.SIGTERM)
        assert child.finish() == 1, child.output
    report = report_of(child)
    assert report["clean"] is False
    assert [p["phase"] for p in report["phases"]][-1] == "EXITING"
    assert [(s["name"], s["outcome"]) for s in report["services"]] == [
        ("worker", "abandoned")
    ]


@pytest.mark.parametrize("backend", ["asyncio"])
def test_escalation_brings_the_watchdog_deadline_forward(backend: str) -> None:
    # The second signal leaves cancel_timeout (0.5 s) of a 60.5 s budget; the
    # cancelled worker then blocks the loop, so only the watchdog, re-armed by
    # the escalation, can end the process in time.
    options = "--behaviour blocked-when-cancelled --work 60 --drain 60 --cancel 0.5"
    with serve(backend, f"{options} --spy") as child:
        child.send(signal.SIGTERM)
        child.wait_for("spy: handler called for SIGTERM")
        past_debounce()
        child.send(signal.SIGTERM)
        child.wait_for("blocking the loop")
        assert child.finish() == 128 + signal.SIGTERM, child.output
    assert "REPORT " not in child.output
