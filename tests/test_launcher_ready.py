"""``shutdown-scope run --ready MODE``: programs that never send READY=1.

``accepting`` is tested on the real programs it is for: plain ``uvicorn --fd 3``
(an epoll server that duplicates fd 3), the standard library's ``http.server``
(``poll``) and the test child (``poll`` through a socket timeout), each reloaded
under load with no failed request; gunicorn's uvicorn worker too, when installed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import re
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from _spawn import Launcher
from test_launcher import ask, launcher, port_of, reload_command
from test_reload_hypercorn import under_load

from shutdown_scope._launcher import main

pytestmark = pytest.mark.subprocess

HERE = Path(__file__).parent
EXAMPLES = HERE.parent / "examples"
PLAIN_SERVER = str(HERE / "_plain_http_server.py")


def test_accepting_sees_a_server_that_polls_its_socket(tmp_path: Path) -> None:
    """``hang`` never sends READY=1; it waits in ``poll`` on fd 3."""
    control = str(tmp_path / "control")
    options = ("--listen", "127.0.0.1:0", "--control", control, "--ready", "accepting")
    with launcher(*options, behaviour="hang") as child:
        port = port_of(child)
        child.wait_for("generation 1 (pid")
        child.wait_for(") ready (--ready accepting)")
        result = reload_command("--control", control)
        assert result.returncode == 0, result.stderr
        assert "generation 2 (pid" in result.stderr
        child.wait_for("gen 1 exiting")
        assert ask(port).startswith("gen 2 ")
        child.send(signal.SIGTERM)
        assert child.finish() == 0


@pytest.mark.parametrize(
    ("mode", "took_over"), [("notify", True), ("accepting", False)]
)
def test_each_mode_counts_only_its_own_sign(
    tmp_path: Path, mode: str, *, took_over: bool
) -> None:
    """``deaf`` sends READY=1 but never waits on its socket: READY=1 counts under
    ``notify`` only; under ``accepting`` the reload fails and generation 1 serves."""
    control = str(tmp_path / "control")
    options = ["--listen", "127.0.0.1:0", "--control", control, "--ready", mode]
    with launcher(*options, "--ready-timeout", "1", behaviour="serve,deaf") as child:
        port = port_of(child)
        child.wait_for(") ready")
        result = reload_command("--control", control)
        if took_over:
            assert result.returncode == 0, result.stderr
        else:
            assert result.returncode == 1, result.stderr
            assert "never waited for connections on a handed socket" in result.stderr
            assert ask(port).startswith("gen 1 ")
        child.send(signal.SIGTERM)
        assert child.finish() == 0


@pytest.mark.parametrize(
    ("mode", "took_over"), [("after:0.3", True), ("after:60", False)]
)
def test_after_is_a_timer(tmp_path: Path, mode: str, *, took_over: bool) -> None:
    control = str(tmp_path / "control")
    options = ["--listen", "127.0.0.1:0", "--control", control, "--ready", mode]
    with launcher(*options, "--ready-timeout", "1", behaviour="hang") as child:
        port_of(child)
        if took_over:
            child.wait_for(f") ready (--ready {mode})")
        result = reload_command("--control", control)
        assert result.returncode == (0 if took_over else 1), result.stderr
        child.send(signal.SIGTERM)
        assert child.finish() == 0


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("ready", "expected notify, accepting or after:SECONDS"),
        ("after", "expected notify, accepting or after:SECONDS"),
        ("after:", "after:SECONDS: '' is not a number of seconds"),
        ("after:-1", "after:SECONDS: '-1' is not a number of seconds"),
        ("after:inf", "after:SECONDS: 'inf' is not a number of seconds"),
        ("Accepting", "expected notify, accepting or after:SECONDS"),
    ],
)
def test_a_bad_ready_mode_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], value: str, message: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["run", "--ready", value, "--", "true"])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_accepting_without_a_socket_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["run", "--ready", "accepting", "--", "true"]) == 2
    assert "--ready accepting needs a socket to watch" in capsys.readouterr().err


# -- real servers that send no READY=1, reloaded under load ----------------------


@contextlib.contextmanager
def launched(
    tmp_path: Path, *command: str, ready: str = "accepting"
) -> Iterator[tuple[Launcher, str, str]]:
    control = str(tmp_path / "control")
    with Launcher(
        *("-m", "shutdown_scope", "run", "--listen", "127.0.0.1:0"),
        *("--control", control, "--ready", ready, "--ready-timeout", "20", "--"),
        *command,
    ) as child:
        line = child.wait_for("shutdown-scope: listening on 127.0.0.1:")
        port = re.search(r"127\.0\.0\.1:(\d+) ", line)
        assert port is not None, line
        child.wait_for("generation 1 (pid")
        child.wait_for(") ready")
        yield child, f"http://127.0.0.1:{port[1]}", control


UVICORN = [
    *(sys.executable, "-m", "uvicorn", "--fd", "3", "--app-dir", str(EXAMPLES)),
    *("--log-level", "warning", "work_app:app"),
]
GUNICORN = [
    *(sys.executable, "-m", "gunicorn", "-k", "uvicorn_worker.UvicornWorker"),
    *("-w", "2", "--chdir", str(EXAMPLES), "--log-level", "warning"),
    *("--no-control-socket", "work_app:app"),
    # A uvicorn worker of gunicorn's sometimes never ends its keep-alive
    # connections after SIGTERM; gunicorn then waits out its graceful timeout
    # (30 s by default) before it kills the worker. That is gunicorn's own stop,
    # not the launcher's reload under test: keep it short.
    *("--graceful-timeout", "3"),
]


def _gunicorn() -> list[str]:
    if not (
        importlib.util.find_spec("gunicorn")
        and importlib.util.find_spec("uvicorn_worker")
    ):
        pytest.skip("gunicorn and uvicorn-worker are not installed (the test extra)")
    return GUNICORN


@pytest.mark.parametrize(
    ("program", "ready"),
    [
        ("uvicorn", "accepting"),
        ("plain", "accepting"),
        ("gunicorn", "accepting"),
        ("gunicorn", "notify"),
    ],
)
def test_a_server_without_ready_1_reloads_under_load_failing_nothing(
    tmp_path: Path, program: str, ready: str
) -> None:
    command = {
        "uvicorn": lambda: UVICORN,
        "plain": lambda: [sys.executable, PLAIN_SERVER],
        "gunicorn": _gunicorn,
    }[program]()
    # uvicorn re-raises the SIGTERM it handled once it has drained: 128 + 15.
    code = 128 + signal.SIGTERM if program == "uvicorn" else 0
    with launched(tmp_path, *command, ready=ready) as (child, url, control):
        stats, results, at_exit = under_load(child, url, control, reloads=2)
        child.send(signal.SIGTERM)
        assert child.finish() == code, child.output
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    assert len(at_exit) == 2
    assert stats.refused == 0, stats.summary()
    assert set(stats.statuses) == {200}, stats.statuses
    if program != "gunicorn":
        # gunicorn's uvicorn worker loses a few requests of keep-alive connections
        # when it stops, whoever asks it to (its own SIGHUP restart too).
        assert stats.lost == 0, stats.summary()
    exits = re.findall(r"generation (\d) \(pid \d+\) exited: (.*)", child.output)
    how = "SIGTERM (exit code 143)" if code else "exit code 0"
    assert exits == [("1", how), ("2", how), ("3", how)], child.output
