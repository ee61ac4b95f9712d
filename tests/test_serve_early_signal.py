"""``shutdown-scope serve``: a stop signal while the app module imports.

Before the scope exists, a SIGTERM used to end the process by the default
action (-15). Now it is recorded from the command's first line on and becomes
the scope's shutdown: a clean stop (exit 0), and the server never starts.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from _spawn import Child

pytestmark = pytest.mark.subprocess

SLOW_APP = """
import os
import time
print("importing the app", flush=True)
while not os.path.exists(os.environ["GO_ON"]):  # the test says when
    time.sleep(0.01)
print("imported the app", flush=True)


async def app(scope, receive, send):
    raise RuntimeError("never served")
"""


@pytest.mark.parametrize(
    ("backend", "sig"), [("asyncio", signal.SIGTERM), ("trio", signal.SIGINT)]
)
def test_a_stop_signal_while_the_app_imports_is_a_clean_stop(
    tmp_path: Path, backend: str, sig: signal.Signals
) -> None:
    (tmp_path / "slow_app.py").write_text(SLOW_APP)
    go_on = tmp_path / "go-on"
    argv = ["-m", "shutdown_scope", "serve", "slow_app:app", "--app-dir", str(tmp_path)]
    argv += ["--bind", "127.0.0.1:0", "--backend", backend]
    with Child(*argv, env={"GO_ON": str(go_on)}) as child:
        child.wait_for("importing the app")
        child.send(sig)  # pending at once: handled before the import reads the file
        go_on.touch()
        assert child.finish() == 0, child.output
    assert "imported the app" in child.output  # the import went on to its end
    assert "listening on" not in child.output, child.output


HUNG_APP = """
import time
print("importing the app", flush=True)
time.sleep(60)  # waits for a database that never answers
"""


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (signal.SIGTERM, signal.SIGTERM),
        (signal.SIGINT, signal.SIGINT),
        (signal.SIGINT, signal.SIGTERM),
    ],
)
def test_a_second_stop_signal_while_the_app_imports_exits_at_once(
    tmp_path: Path, first: signal.Signals, second: signal.Signals
) -> None:
    # The first was recorded, and so was every later one: an import that hangs
    # left the process deaf to Ctrl-C and SIGTERM (only SIGKILL ended it).
    (tmp_path / "hung_app.py").write_text(HUNG_APP)
    argv = ("-m", "shutdown_scope", "serve", "hung_app:app", "--app-dir", str(tmp_path))
    with Child(*argv, "--bind", "127.0.0.1:0", timeout=15) as child:
        child.wait_for("importing the app")
        child.send(first)
        time.sleep(0.5)  # past the debounce: a second signal, not the same one
        child.send(second)
        assert child.finish() == 128 + first, child.output


def test_a_stop_signal_twice_at_once_while_the_app_imports_counts_once(
    tmp_path: Path,
) -> None:
    # A Ctrl-C the launcher passes on too: the same signal within the debounce.
    (tmp_path / "slow_app.py").write_text(SLOW_APP)
    go_on = tmp_path / "go-on"
    argv = ("-m", "shutdown_scope", "serve", "slow_app:app", "--app-dir", str(tmp_path))
    with Child(*argv, "--bind", "127.0.0.1:0", env={"GO_ON": str(go_on)}) as child:
        child.wait_for("importing the app")
        child.send(signal.SIGINT)
        child.send(signal.SIGINT)
        go_on.touch()
        assert child.finish() == 0, child.output
    assert "imported the app" in child.output
