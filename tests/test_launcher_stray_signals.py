"""Stray signals sent to the launcher: passed on to the child, never fatal.

A real launcher gets each class of signal by ``kill()``; its child (which records
the signals it gets) must receive each, the launcher must still run, and a
SIGTERM afterwards must stop both with the child's exit code.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
from _spawn import Launcher

pytestmark = pytest.mark.subprocess

RECORDER = str(Path(__file__).with_name("_signal_recorder.py"))

# One of each class: timers, I/O, power, resource limits, terminal, real-time.
CLASSES = {
    "timers": (signal.SIGALRM, signal.SIGVTALRM, signal.SIGPROF),
    "io-power-limits": (
        signal.SIGIO,
        signal.SIGPWR,
        signal.SIGXCPU,
        getattr(signal, "SIGSTKFLT", 16),  # no name before Python 3.11
    ),
    "terminal": (signal.SIGTTIN, signal.SIGTTOU),
    "real-time": (
        signal.SIGRTMIN,
        signal.SIGRTMIN + 1,
        signal.SIGRTMAX - 1,
        signal.SIGRTMAX,
    ),
}


PASSED_ON_NAMED = tuple(sig for signals in CLASSES.values() for sig in signals)


def recorded_launcher() -> Launcher:
    """``shutdown-scope run -- python _signal_recorder.py``, its child ready."""
    child = Launcher(
        "-m", "shutdown_scope", "run", "--debounce", "0", "--", sys.executable, RECORDER
    )
    child.wait_for("ready")
    return child


@pytest.mark.parametrize("name", list(CLASSES))
def test_a_stray_signal_is_passed_on_and_the_launcher_goes_on(name: str) -> None:
    with recorded_launcher() as child:
        for sig in CLASSES[name]:
            os.kill(child.proc.pid, sig)
            child.wait_for(f"got {int(sig)}")
            assert child.proc.poll() is None, child.output
        child.send(signal.SIGTERM)
        child.wait_for(f"got {int(signal.SIGTERM)}")
        assert child.finish() == 0, child.output


def test_every_signal_passed_on_reaches_the_child() -> None:
    with recorded_launcher() as child:
        for sig in (*PASSED_ON_NAMED, *range(signal.SIGRTMIN, signal.SIGRTMAX + 1)):
            os.kill(child.proc.pid, sig)
            child.wait_for(f"got {sig}")
        child.send(signal.SIGTERM)
        assert child.finish() == 0, child.output


@pytest.mark.parametrize("sig", [signal.SIGPIPE, signal.SIGXFSZ])
def test_signals_python_ignores_neither_end_the_launcher_nor_reach_the_child(
    sig: signal.Signals,
) -> None:
    with recorded_launcher() as child:
        child.send(sig)
        child.send(signal.SIGRTMIN)  # passed on behind it: sig was read by now
        child.wait_for(f"got {int(signal.SIGRTMIN)}")
        child.send(signal.SIGTERM)
        assert child.finish() == 0, child.output
    assert f"got {int(sig)}" not in child.output
