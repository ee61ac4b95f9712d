"""Real processes, real signals: the exit codes and log order an operator sees.

Each test runs ``tests/_children.py`` and acts on the markers it prints. The only
sleeps are ``past_debounce()``: a lower bound between two signals, never a wait
for the child to reach a state.
"""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from _spawn import Child

CHILDREN = Path(__file__).with_name("_children.py")
# graceful_scope's default signal_debounce, which the children use.
DEBOUNCE = 0.2


def line_of(fragment: str) -> int:
    """The number of the line of _children.py that contains ``fragment``."""
    lines = CHILDREN.read_text().splitlines()
    return next(n for n, line in enumerate(lines, start=1) if fragment in line)


pytestmark = pytest.mark.subprocess
backends = pytest.mark.parametrize("backend", ["asyncio", "trio"])
both_signals = pytest.mark.parametrize(
    "sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"]
)


def serve(backend: str, options: str = "") -> Child:
    """Start the ``serve`` child with ``options``; return once its job is in flight."""
    child = Child(str(CHILDREN), "serve", "--backend", backend, *options.split())
    child.wait_for("ready pid=")
    return child


def report_of(child: Child) -> dict[str, Any]:
    line = child.lines[child.index("REPORT ")]
    report: dict[str, Any] = json.loads(line.removeprefix("REPORT "))
    return report


def events(child: Child) -> list[dict[str, Any]]:
    """The child's JSON log records that carry an event (``--log-json``), in order,
    each with ``line``: where it is in the output."""
    found = []
    for n, line in enumerate(child.lines):
        if line.startswith("{"):
            record: dict[str, Any] = json.loads(line)
            if "event" in record:
                found.append({**record, "line": n})
    return found


def past_debounce() -> None:
    """Let the debounce window pass before the next signal.

    Called after the child showed that it handled the previous signal, so this
    is a lower bound on the gap between the two handler calls: a slow machine
    only makes the gap longer.
    """
    time.sleep(DEBOUNCE + 0.1)


def stopped(
    backend: str,
    options: str,
    *,
    code: int,
    sig: signal.Signals = signal.SIGTERM,
    again_after: tuple[str, ...] = (),
) -> Child:
    """Serve with ``options`` and send ``sig``; after each marker of ``again_after``
    (and the debounce window) send it again. Return the child, which exited with
    ``code``."""
    with serve(backend, options) as child:
        child.send(sig)
        for marker in again_after:
            child.wait_for(marker)
            past_debounce()
            child.send(sig)
        assert child.finish() == code, child.output
    return child


def assert_no_traceback(child: Child) -> None:
    assert "Traceback" not in child.output, child.output
    assert "KeyboardInterrupt" not in child.output, child.output


def assert_watchdog_dump(child: Child, why: str, code: int) -> None:
    """The watchdog's own line, the scope's state, tasks, then every thread."""
    child.assert_in_order(
        f"shutdown_scope watchdog: {why}; exiting with code {code}",
        "in flight: ['worker: job 1']",
        "not finished: ['worker']",
        "threads:",
        "(most recent call first):",
    )
    assert "REPORT " not in child.output  # no report: the process was ended


# -- a graceful stop --------------------------------------------------------------


@backends
@both_signals
def test_signal_drains_in_flight_work_then_exits_0(
    backend: str, sig: signal.Signals
) -> None:
    child = stopped(backend, "--work 0.3 --log-json", sig=sig, code=0)
    seen = events(child)
    assert [e["event"] for e in seen] == [
        "shutdown_begins",
        "phase",
        "phase",
        "report",
    ], child.output
    begins, stopping, draining, logged = seen
    assert (begins["trigger"], begins["signal"]) == ("signal", sig.name)
    assert (stopping["phase"], stopping["in_flight"]) == ("STOPPING", ["worker: job 1"])
    assert (draining["phase"], draining["in_flight"]) == ("DRAINING", ["worker: job 1"])
    assert draining["line"] < child.index("job done") < logged["line"]
    assert (logged["clean"], logged["exit_code"], logged["level"]) == (True, 0, "INFO")
    assert logged["report"] == report_of(child)
    assert "watchdog" not in child.output
    assert_no_traceback(child)
    report = report_of(child)
    assert report["clean"] is True
    assert (report["trigger"], report["signal"]) == ("signal", sig)
    assert report["signals_received"] == 1
    assert [p["phase"] for p in report["phases"]] == ["STOPPING", "DRAINING"]
    assert [(s["name"], s["outcome"]) for s in report["services"]] == [
        ("worker", "returned")
    ]


@backends
def test_signals_within_the_debounce_window_count_once(backend: str) -> None:
    # Not two kill() calls in a row: the kernel keeps one pending signal per
    # number, so a pair sent before the handler ran would arrive as one and the
    # debounce would go untested. The spy shows the handler ran twice.
    with serve(backend, "--work 1 --spy") as child:
        child.send(signal.SIGTERM)
        child.wait_for("spy: handler called for SIGTERM")
        child.send(signal.SIGTERM)  # a few ms later, well inside the window
        child.wait_for("spy: handler called for SIGTERM")
        assert child.finish() == 0, child.output
    child.assert_in_order(
        "shutdown_scope: DRAINING; in flight: ['worker: job 1']",
        "job done",
        "shutdown_scope: shutdown clean (exit code 0)",
    )
    assert "again" not in child.output
    assert "CANCELLING" not in child.output
    report = report_of(child)
    assert report["clean"] is True
    assert report["signals_received"] == 1


@backends
def test_watchdog_never_fires_after_a_clean_shutdown(backend: str) -> None:
    # The whole budget is 1.5 s from the signal; the child lingers 2 s after
    # the scope, with the loop blocked, well past it.
    child = stopped(backend, "--work 0 --drain 1 --cancel 0.5 --linger 2", code=0)
    child.assert_in_order("shutdown_scope: shutdown clean (exit code 0)", "lingered")
    assert "watchdog" not in child.output
    assert report_of(child)["clean"] is True


# -- escalation -------------------------------------------------------------------


@backends
@both_signals
def test_second_signal_cancels_in_flight_work(
    backend: str, sig: signal.Signals
) -> None:
    draining = '"phase": "DRAINING"'
    child = stopped(
        backend, "--work 60 --log-json", sig=sig, again_after=(draining,), code=1
    )
    seen = [e for e in events(child) if e["event"] != "shutdown_begins"]
    assert [(e["event"], e.get("phase")) for e in seen] == [
        ("phase", "STOPPING"),
        ("phase", "DRAINING"),
        ("escalated", None),
        ("phase", "CANCELLING"),
        ("in_flight_cancelled", None),
        ("report", None),
    ], child.output
    escalated, cancelling, cancelled, logged = seen[2:]
    assert escalated["signal"] == sig.name
    assert cancelling["in_flight"] == ["worker: job 1"]
    assert (cancelled["service"], cancelled["in_flight"]) == (
        "worker",
        ["worker: job 1"],
    )
    assert cancelling["line"] < child.index("job cancelled") < logged["line"]
    assert (logged["clean"], logged["exit_code"], logged["level"]) == (
        False,
        1,
        "WARNING",
    )
    assert "job done" not in child.output
    assert "watchdog" not in child.output
    assert_no_traceback(child)
    report = report_of(child)
    assert report["clean"] is False
    assert report["signals_received"] == 2
    (worker,) = report["services"]
    assert worker["outcome"] == "cancelled"
    assert worker["cancelled_in_flight"] == ["worker: job 1"]


@backends
@both_signals
def test_third_signal_exits_hard_with_a_dump(backend: str, sig: signal.Signals) -> None:
    # Budgets far longer than the test: only the third signal can end it.
    options = "--behaviour stubborn --work 60 --drain 20 --cancel 20"
    again_after = ("shutdown_scope: DRAINING", "ignoring cancel")
    child = stopped(backend, options, sig=sig, again_after=again_after, code=128 + sig)
    child.assert_in_order(
        "shutdown_scope: CANCELLING; in flight: ['worker: job 1']",
        "ignoring cancel",
        "phase: CANCELLING",
    )
    assert_watchdog_dump(child, f"{sig.name} received 3 times", 128 + sig)
    assert_no_traceback(child)


@backends
def test_third_ctrl_c_ends_a_blocked_loop(backend: str) -> None:
    # The loop never runs again once the worker blocks: the Python handler, run
    # between the blocked call's retries, is what counts the signals.
    with serve(backend, "--behaviour blocked --drain 20 --cancel 20") as child:
        child.send(signal.SIGINT)
        child.wait_for("blocking the loop")
        past_debounce()
        child.send(signal.SIGINT)
        past_debounce()
        child.send(signal.SIGINT)
        assert child.finish() == 130, child.output
    assert_watchdog_dump(child, "SIGINT received 3 times", 130)
    assert "CANCELLING" not in child.output  # the loop could not get that far
    assert_no_traceback(child)


@backends
def test_second_signal_once_cancelling_exits_hard(backend: str) -> None:
    # The drain deadline already moved the scope to CANCELLING: one more signal
    # is the last word.
    options = "--behaviour stubborn --work 60 --drain 0.3 --cancel 20"
    child = stopped(backend, options, again_after=("ignoring cancel",), code=143)
    child.assert_in_order(
        "shutdown_scope: CANCELLING; in flight: ['worker: job 1']",
        "ignoring cancel",
        "phase: CANCELLING",
    )
    assert_watchdog_dump(child, "SIGTERM received 2 times", 143)
    dump = child.lines[child.index("shutdown_scope watchdog") : child.index("threads:")]
    tasks = "\n".join(dump)
    # The stubborn worker awaits in its shielded sleep; the loop thread's own
    # stack (faulthandler) is in the event loop, so only the task dump says so.
    assert re.search(r"_children\.py:\d+ in worker", tasks), tasks


# -- the watchdog -----------------------------------------------------------------


@backends
def test_watchdog_ends_a_blocked_loop(backend: str) -> None:
    child = stopped(backend, "--behaviour blocked --drain 0.5 --cancel 0.5", code=143)
    child.assert_in_order(
        "shutdown_scope: STOPPING; in flight: ['worker: job 1']",
        "blocking the loop",
        "shutdown_scope watchdog",
    )
    assert_watchdog_dump(child, "the shutdown budget is spent", 143)
    # The worker may block before or after the scope's switch to DRAINING.
    assert re.search(r"^  phase: (STOPPING|DRAINING);", child.output, re.MULTILINE)
    header = {"asyncio": "asyncio tasks (", "trio": "trio task tree:"}[backend]
    child.assert_in_order("shutdown_scope watchdog", header, "threads:")
    # faulthandler's stack of the loop thread ends in the blocking call.
    line = line_of("time.sleep(60)  # noqa: ASYNC251 -- the point")
    assert re.search(rf'File ".*_children\.py", line {line} in worker', child.output)


@backends
def test_watchdog_ends_a_loop_blocked_before_the_signal(backend: str) -> None:
    # The loop never sees the signal: the handler itself arms the watchdog.
    with serve(backend, "--behaviour hung --drain 0.2 --cancel 0.2") as child:
        child.wait_for("blocking the loop")
        child.send(signal.SIGTERM)
        assert child.finish() == 143, child.output
    child.assert_in_order(
        "blocking the loop",
        "shutdown_scope watchdog: the shutdown budget is spent; exiting with code 143",
        "phase: RUNNING",
        "threads:",
    )
    assert "shutdown begins" not in child.output
    line = line_of("time.sleep(60)  # noqa: ASYNC251 -- hung")
    assert re.search(rf'File ".*_children\.py", line {line} in serve', child.output)


@backends
def test_watchdog_ends_a_service_that_ignores_cancellation(backend: str) -> None:
    options = "--behaviour stubborn --work 60 --drain 0.3 --cancel 0.3"
    child = stopped(backend, options, code=143)
    child.assert_in_order(
        "shutdown_scope: CANCELLING; in flight: ['worker: job 1']",
        "ignoring cancel",
        "shutdown_scope watchdog",
    )
    # The loop (at the end of the cancel window) and the watchdog thread (at
    # the end of the budget) reach the same deadline: either may say it first.
    why = re.search(
        r"^shutdown_scope watchdog: (.*); exiting", child.output, re.MULTILINE
    )
    assert why, child.output
    assert why.group(1) in {
        "service 'worker' ignored cancellation past the deadline",
        "the shutdown budget is spent",
    }, child.output
    assert_watchdog_dump(child, why.group(1), 143)


@backends
def test_hard_exit_without_a_signal_exits_1(backend: str) -> None:
    options = "--behaviour blocked --drain 0.2 --cancel 0.2 --request"
    with serve(backend, options) as child:
        assert child.finish() == 1, child.output
    child.assert_in_order(
        "shutdown_scope: shutdown begins (request: asked by the child)",
        "blocking the loop",
        "shutdown_scope watchdog",
    )
    assert_watchdog_dump(child, "the shutdown budget is spent", 1)


@backends
def test_hard_exit_code_is_honoured(backend: str) -> None:
    options = "--behaviour blocked --drain 0.2 --cancel 0.2 --hard-exit-code 3"
    child = stopped(backend, options, code=3)
    assert_watchdog_dump(child, "the shutdown budget is spent", 3)


# -- signal handlers before and after a scope --------------------------------------


@backends
@pytest.mark.parametrize(
    "custom", [True, False], ids=["custom-handler", "default-handler"]
)
def test_handlers_are_restored_after_the_scope(backend: str, *, custom: bool) -> None:
    argv = [str(CHILDREN), "restore", "--backend", backend]
    with Child(*argv, *(["--custom"] if custom else [])) as child:
        child.wait_for("ready pid=")
        child.send(signal.SIGTERM)  # handled by the scope: a graceful stop
        child.wait_for("waiting for a signal")
        child.send(signal.SIGTERM)  # handled by whatever the scope restored
        code = child.finish()
    child.assert_in_order(
        "shutdown clean: True",
        "restored in the loop: True",
        "restored after the run: True",
        "waiting for a signal",
    )
    assert "no signal arrived" not in child.output
    if custom:
        assert code == 42, child.output
        child.assert_in_order("waiting for a signal", "custom handler: SIGTERM")
    else:
        assert code == -signal.SIGTERM, child.output  # SIG_DFL: killed by the signal


@backends
def test_a_signal_given_to_another_thread_still_wakes_the_loop(backend: str) -> None:
    with Child(str(CHILDREN), "other-thread", "--backend", backend) as child:
        assert child.finish() == 0, child.output
    assert "stopped by 15" in child.output  # the report names SIGTERM
