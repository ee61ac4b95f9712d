"""Prove in your test suite that SIGTERM and a reload lose no request.

A pytest file for your own server: point ``SERVER`` at its command (``{port}``
stands for a free port) and ``URL`` at a route that does real work. With
``pip install "shutdown-scope[testing]"``, pytest has the ``shutdown_rehearsal``
fixture. Here the server is ``examples/hypercorn_app.py``; this project's tests
run this file (``tests/test_testing_rehearse.py``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from shutdown_scope.testing import Rehearsal

APP = [sys.executable, str(Path(__file__).with_name("hypercorn_app.py"))]
SERVER = [*APP, "--bind", "127.0.0.1:{port}"]
URL = "http://127.0.0.1:{port}/work?ms=20"


def test_sigterm_loses_no_request(
    shutdown_rehearsal: Callable[..., Rehearsal],
) -> None:
    """Under load, SIGTERM: every request answered, the report clean."""
    rehearsal = shutdown_rehearsal(SERVER, url=URL, clients=16)
    assert rehearsal.lost == 0, rehearsal
    assert rehearsal.report.clean, rehearsal.report
    assert rehearsal.exit_code == 0, rehearsal.output


def test_a_reload_loses_no_request(
    shutdown_rehearsal: Callable[..., Rehearsal],
) -> None:
    """Under ``shutdown-scope run``, SIGHUP: the next generation takes over."""
    launcher = [sys.executable, "-m", "shutdown_scope", "run"]
    rehearsal = shutdown_rehearsal(
        [*launcher, "--listen", "127.0.0.1:{port}", "--", *APP],
        url=URL,
        clients=16,
        reload=True,
    )
    assert rehearsal.lost == 0, rehearsal
    assert rehearsal.refused_before_stop == 0, rehearsal  # no downtime
    assert all(report.clean for report in rehearsal.reports), rehearsal.output
