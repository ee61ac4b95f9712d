"""shutdown_scope.testing.rehearse: real servers, real load, real signals.

A rehearsal of examples/hypercorn_app.py (a graceful server) loses nothing and
brings back its clean report; one of tests/_bad_server.py (SIGTERM kills it)
shows the requests it lost; under the launcher a reload loses nothing either.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shutdown_scope import Phase
from shutdown_scope.testing import Rehearsal, RehearsalError, rehearse

ROOT = Path(__file__).parent.parent
APP = str(ROOT / "examples" / "hypercorn_app.py")
BAD = str(Path(__file__).parent / "_bad_server.py")
BIND_FREE = ("--bind", "127.0.0.1:{port}")

pytestmark = pytest.mark.subprocess

Rehearse = Callable[..., Rehearsal]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_graceful_server_loses_nothing(
    shutdown_rehearsal: Rehearse, backend: str
) -> None:
    rehearsal = shutdown_rehearsal(
        [sys.executable, APP, *BIND_FREE, "--backend", backend],
        url="http://127.0.0.1:{port}/work?ms=5",
        clients=16,
    )
    assert rehearsal.lost == 0, rehearsal
    assert rehearsal.report.clean, rehearsal.output
    assert rehearsal.answered > 0
    assert dict(rehearsal.statuses) == {200: rehearsal.answered}
    assert (rehearsal.exit_code, rehearsal.killed) == (0, False)
    assert rehearsal.refused_before_stop == 0
    assert 0 < rehearsal.exited_after < 30
    (report,) = rehearsal.reports
    assert report.signal == signal.SIGTERM
    assert [p.phase for p in report.phases] == [Phase.STOPPING, Phase.DRAINING]
    # The app counts the /work requests it read and answered: every one of
    # them reached a client (the last line before its report).
    assert f"{rehearsal.answered} read, {rehearsal.answered} answered" in (
        rehearsal.output
    )


def test_a_server_killed_by_sigterm_loses_its_requests_in_flight() -> None:
    rehearsal = rehearse(
        [sys.executable, BAD, "{port}"], url="http://127.0.0.1:{port}/", clients=8
    )
    assert rehearsal.lost > 0, rehearsal
    assert rehearsal.exit_code == -signal.SIGTERM
    assert rehearsal.reports == ()
    with pytest.raises(RehearsalError, match="wrote no report"):
        _ = rehearsal.report


def test_a_server_that_ignores_sigterm_is_killed_after_the_grace_period() -> None:
    rehearsal = rehearse(
        [sys.executable, BAD, "{port}", "--ignore-sigterm"],
        url="http://127.0.0.1:{port}/",
        clients=2,
        signal_after=0.1,
        grace_period=0.5,
    )
    assert rehearsal.killed
    assert rehearsal.exit_code == -signal.SIGKILL
    assert rehearsal.exited_after >= 0.5


def test_a_reload_under_the_launcher_loses_nothing() -> None:
    launcher = [sys.executable, "-m", "shutdown_scope", "run"]
    rehearsal = rehearse(
        [*launcher, "--listen", "127.0.0.1:{port}", "--", sys.executable, APP],
        url="http://127.0.0.1:{port}/work?ms=5",
        clients=16,
        reload=True,
        signal_after=0.3,
    )
    assert rehearsal.lost == 0, rehearsal
    assert rehearsal.refused_before_stop == 0, rehearsal
    assert rehearsal.exit_code == 0
    replaced, last = rehearsal.reports
    assert rehearsal.report is replaced
    assert replaced.clean, rehearsal.output
    assert last.clean, rehearsal.output
    assert replaced.signal == last.signal == signal.SIGTERM


def test_reload_needs_the_launcher() -> None:
    with pytest.raises(RehearsalError, match="no child process to replace"):
        rehearse(
            [sys.executable, APP, *BIND_FREE],
            url="http://127.0.0.1:{port}/work?ms=5",
            clients=2,
            signal_after=0.1,
            reload=True,
        )


def test_a_server_that_exits_before_answering() -> None:
    code = "import sys; print('no port', sys.argv[1]); sys.exit(3)"
    with pytest.raises(RehearsalError) as failed:
        rehearse([sys.executable, "-c", code, "{port}"], url="http://127.0.0.1:{port}/")
    message = str(failed.value)
    assert "exited with code 3 before it answered" in message
    assert "no port" in message  # its output


def test_a_server_that_never_answers() -> None:
    code = "import time; time.sleep(60)"
    with pytest.raises(RehearsalError, match=r"did not answer .* within 0\.3 s"):
        rehearse(
            [sys.executable, "-c", code],
            url="http://127.0.0.1:{port}/",
            env={"PORT": "{port}"},
            start_timeout=0.3,
        )


def test_a_server_that_exits_under_load_before_the_signal() -> None:
    with pytest.raises(RehearsalError, match="exited with code 4 before the signal"):
        rehearse(
            [sys.executable, BAD, "{port}", "--exit-after"],
            url="http://127.0.0.1:{port}/",
            clients=2,
            signal_after=5,
        )


def test_a_server_that_stops_answering_under_load() -> None:
    with pytest.raises(RehearsalError, match=r"no answer from .* in 0\.5 s"):
        rehearse(
            [sys.executable, BAD, "{port}", "--hang-after-first"],
            url="http://127.0.0.1:{port}/",
            clients=2,
            signal_after=0.1,
            start_timeout=0.5,
        )


def test_a_reload_that_never_completes(tmp_path: Path) -> None:
    # Generation 2 never gets ready: generation 1 is not replaced.
    wrapper = 'test "$SHUTDOWN_SCOPE_GENERATION" = 2 && exec sleep 60; exec "$0" "$@"'
    launcher = [sys.executable, "-m", "shutdown_scope", "run"]
    listen = ["--listen", "127.0.0.1:{port}", "--"]
    with pytest.raises(RehearsalError, match=r"the reload did not replace pid \d+"):
        rehearse(
            [*launcher, *listen, "sh", "-c", wrapper, sys.executable, APP],
            url="http://127.0.0.1:{port}/work?ms=5",
            clients=2,
            signal_after=0.1,
            reload=True,
            # The first start must fit it on a loaded machine; the failed
            # reload is then given start_timeout + grace_period.
            start_timeout=3,
            grace_period=0.5,
        )


def test_the_server_gets_a_port_and_a_clean_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """{port} in argv and env; systemd's variables are not passed on."""
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/not-for-the-server")
    monkeypatch.setenv("LISTEN_FDS", "3")
    code = (
        "import os, sys; print('env', os.environ.get('APP_PORT'),"
        " os.environ.get('NOTIFY_SOCKET'), os.environ.get('LISTEN_FDS'),"
        " bool(os.environ.get('SHUTDOWN_SCOPE_REPORT_FILE')), flush=True);"
        " os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
    )
    rehearsal = rehearse(
        [sys.executable, "-c", code, BAD, "{port}"],
        url="http://127.0.0.1:{port}/",
        env={"APP_PORT": "{port}"},
        clients=1,
        signal_after=0.1,
    )
    words = rehearsal.output.split()
    at = words.index("env")
    assert words[at + 1].isdigit()
    assert words[at + 2 : at + 5] == ["None", "None", "True"]


@pytest.mark.parametrize(
    ("command", "options", "error", "match"),
    [
        ("python app.py", {}, TypeError, "argv list"),
        ([], {}, TypeError, "argv list"),
        (["app", 3], {}, TypeError, "strings only"),
        (["app"], {"env": {"A": 1}}, TypeError, "strings only"),
        (["app"], {"url": "http://127.0.0.1:{port}/"}, ValueError, "both in url"),
        (["app", "{port}"], {"url": "http://127.0.0.1:80/"}, ValueError, "both"),
        (["app"], {"url": "https://127.0.0.1:80/"}, ValueError, "http://host:port"),
        (["app"], {"url": "http://127.0.0.1/"}, ValueError, "http://host:port"),
        (["app"], {"url": "http://127.0.0.1:99999/"}, ValueError, "http://host"),
        (["app"], {"clients": 0}, ValueError, "clients must be"),
        (["app"], {"clients": True}, ValueError, "clients must be"),
        (["app"], {"signal_after": -1}, ValueError, "finite seconds >= 0"),
        (["app"], {"grace_period": float("nan")}, ValueError, "finite seconds"),
        (["app"], {"start_timeout": float("inf")}, ValueError, "finite seconds"),
        (["app"], {"grace_period": "1"}, TypeError, "number of seconds"),
        (["app"], {"signal": 0}, ValueError, "signal number"),
        (["app"], {"signal": True}, ValueError, "signal number"),
        (["app"], {"signal": 4096}, ValueError, "signal number"),
        (["app"], {"reload": 1}, TypeError, "True or False"),
    ],
)
def test_bad_arguments_are_refused_before_anything_starts(
    command: Any, options: dict[str, Any], error: type[Exception], match: str
) -> None:
    options.setdefault("url", "http://127.0.0.1:80/")
    with pytest.raises(error, match=match):
        rehearse(command, **options)


def test_the_docs_recipe_passes() -> None:
    """examples/test_shutdown_rehearsal.py, run by pytest as a user would."""
    recipe = ROOT / "examples" / "test_shutdown_rehearsal.py"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(recipe)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout
