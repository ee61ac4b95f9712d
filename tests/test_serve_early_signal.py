"""``shutdown-scope serve``: a stop signal while the app module imports.

Before the scope exists, a SIGTERM used to end the process by the default
action (-15). Now it is recorded from the command's first line on and becomes
the scope's shutdown: a clean stop (exit 0), and the server never starts.
"""

from __future__ import annotations

import signal
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
