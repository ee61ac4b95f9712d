"""shutdown_scope.hypercorn.serve: a real hypercorn app, real signals, real clients.

Every test runs examples/hypercorn_app.py as a child process on both of
hypercorn's workers (asyncio and trio) and stops it with a real SIGTERM. The
behaviour shared with ``shutdown_scope.uvicorn.serve`` is checked by the cases
of tests/_serving_cases.py, run here on hypercorn and in test_uvicorn_serve.py
on uvicorn.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import _serving_cases as cases
import pytest

from shutdown_scope import Phase
from shutdown_scope.testing import Rehearsal

EXAMPLES = Path(__file__).parent.parent / "examples"

APP = str(EXAMPLES / "hypercorn_app.py")

pytestmark = pytest.mark.subprocess

SERVERS = {"asyncio": cases.HYPERCORN_ASYNCIO, "trio": cases.HYPERCORN_TRIO}


@pytest.mark.parametrize("backend", SERVERS)
def test_no_request_lost_under_load(
    backend: str, shutdown_rehearsal: Callable[..., Rehearsal]
) -> None:
    rehearsal = shutdown_rehearsal(
        [sys.executable, APP, "--backend", backend, "--bind", "127.0.0.1:{port}"],
        url="http://127.0.0.1:{port}/work?ms=5",
        clients=32,
        signal_after=0.3,  # mid-load: every client has had answers for a while
    )
    assert rehearsal.lost == 0, rehearsal
    # Every request the app read was answered, and every answer reached a client.
    counts = "lifespan: shutdown; /work requests: {0} read, {0} answered"
    assert counts.format(rehearsal.answered) in rehearsal.output, rehearsal
    assert set(rehearsal.statuses) == {200}
    assert rehearsal.closed_by_server > 0  # Connection: close once stopping
    assert rehearsal.refused > 0  # the listener closed: new connections refused
    assert rehearsal.exit_code == 0
    report = rehearsal.report
    assert report.clean
    assert [p.phase for p in report.phases] == [Phase.STOPPING, Phase.DRAINING]


@pytest.mark.parametrize(
    "case",
    cases.EVERY_SERVER,
    ids=lambda case: case.__name__,
)
@pytest.mark.parametrize("backend", SERVERS)
def test_serving_case(case: Callable[[cases.Server], None], backend: str) -> None:
    case(SERVERS[backend])
